"""The run's MaskSpec in export: read from config.yaml (flat or nested), written to the metadata, applied by
`prepare_image` (every mode, `inverse` included), eagerly and inside a tf.function."""

import numpy as np
import pytest
import tensorflow as tf

from tfcxr.export.savedmodel import RunInfo, read_run
from tfcxr.export.serving_module import prepare_image
from tfcxr.mask_options import MASK_MODES
from tfcxr.mask_spec import MaskSpec
from tfcxr.masking import apply_mask


def _run_dir(tmp_path, text):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(text)
    (tmp_path / "best.keras").write_bytes(b"")
    return tmp_path


def test_read_run_takes_flat_and_nested_mask_settings(tmp_path):
    flat = read_run(_run_dir(tmp_path / "flat", "mask: inverse\nmargin: 3px\nfill: mean\nimage_size: 32\n"))
    nested = read_run(_run_dir(tmp_path / "nested", "mask_spec: {mode: inverse, margin: 3px, fill: mean, "
                                                    "image_size: 32}\n"))
    expected = MaskSpec("inverse", "3px", "mean", 32)
    assert flat.mask_spec == nested.mask_spec == expected
    assert (flat.mask, flat.margin, flat.fill, flat.image_size, flat.needs_mask) == ("inverse", "3px", "mean", 32, True)
    metadata = flat.metadata()
    assert MaskSpec.from_dict(metadata["mask_spec"]) == expected
    assert (metadata["mask"], metadata["margin"], metadata["image_size"]) == ("inverse", "3px", 32)  # older readers
    assert read_run(_run_dir(tmp_path / "plain", "image_size: 16\n")).mask_spec == MaskSpec("original", image_size=16)
    with pytest.raises(ValueError, match=r"config\.yaml.*Received: mask='lungs'"):
        read_run(_run_dir(tmp_path / "bad", "mask: lungs\nimage_size: 32\n"))
    with pytest.raises(ValueError, match="needs `mask_spec` or `image_size`"):
        RunInfo(rundir=tmp_path, model_path=tmp_path)


def test_prepare_image_applies_the_spec_for_every_mode(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(30, 255, (64, 64, 1), dtype=np.uint8)
    lungs = np.zeros((64, 64, 1), np.uint8)
    lungs[12:52, 8:28] = 255
    lungs[12:52, 36:56] = 255
    image_bytes, mask_bytes = tf.io.encode_png(image), tf.io.encode_png(lungs)
    source = image.astype(np.float32) / 255.0
    for mode in MASK_MODES:
        info = RunInfo(rundir=tmp_path, model_path=tmp_path, mask_spec=MaskSpec(mode, "2px", "zero", 32))
        eager = prepare_image(image_bytes, info, mask_bytes).numpy()
        traced = tf.function(lambda b, m: prepare_image(b, info, m))(image_bytes, mask_bytes).numpy()  # noqa: B023
        np.testing.assert_allclose(traced, eager, atol=1e-6, err_msg=mode)
        # decode -> mask at source ("2px" at 32 = 4 px at 64) -> resize, as the PNG pipeline does.
        masked = apply_mask(source, lungs > 127, mode, margin=4) if mode != "original" else source
        expected = tf.clip_by_value(tf.image.resize_with_pad(masked, 32, 32, antialias=True), 0, 1).numpy()
        np.testing.assert_allclose(eager, expected, atol=1e-5, err_msg=mode)
    inverse = prepare_image(image_bytes, RunInfo(rundir=tmp_path, model_path=tmp_path,
                                                 mask_spec=MaskSpec("inverse", 0, image_size=64)), mask_bytes).numpy()
    assert np.all(inverse[lungs > 127] == 0) and np.all(inverse[lungs == 0] > 0)
