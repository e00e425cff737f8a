"""Tests of ``tfcxr.segment.segmenter_format``: saving a tiny segmenter and loading it back, checksums, version 1."""

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from segment_model_helpers import BOXES, random_image  # noqa: E402

from tfcxr.segment import load_segmenter  # noqa: E402
from tfcxr.segment.segmenter_format import save_segmenter  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return load_segmenter("tiny")


def test_save_load_round_trip(tmp_path):
    from tfcxr.segment.prompts import InferenceSettings

    model = load_segmenter("tiny")
    model.priors = np.asarray([[0.1, 0.1, 0.45, 0.9], [0.55, 0.12, 0.9, 0.88]], np.float32)
    model.inference = InferenceSettings(prompt="prior", refine_rounds=2, margin=0.03, threshold=-0.5)
    model.mask_definition = {"name": "classic", "description": "visible lung fields"}
    pixel_values, _ = model.preprocess(random_image(64, 64)[None])
    expected = model(pixel_values, BOXES).numpy()
    save_segmenter(model, tmp_path / "seg", extra={"provenance": {"seed": 3}})
    meta = json.loads((tmp_path / "seg" / "segmenter.json").read_text())
    assert meta["kind"] == "litemedsam" and meta["version"] == 2 and meta["weights"]["file"] == "weights.npz"
    assert len(meta["weights"]["sha256"]) == 64 and meta["provenance"] == {"seed": 3}
    loaded = load_segmenter(str(tmp_path / "seg"))
    np.testing.assert_array_equal(loaded(pixel_values, BOXES).numpy(), expected)
    assert loaded.normalization == model.normalization and loaded.image_size == 64
    np.testing.assert_allclose(loaded.priors, model.priors, atol=1e-5)
    assert loaded.inference == model.inference and loaded.mask_definition == model.mask_definition
    assert loaded.source_dir == tmp_path / "seg"


def test_float16_weights_load_as_float32_close_to_the_original(tiny, tmp_path):
    from tfcxr.segment.weights import export_weights

    save_segmenter(tiny, tmp_path / "half", weights_dtype="float16")
    with np.load(tmp_path / "half" / "weights.npz") as stored:
        assert {stored[k].dtype for k in stored.files if stored[k].dtype.kind == "f"} == {np.dtype("float16")}
    loaded = export_weights(load_segmenter(str(tmp_path / "half")).weight_map())
    for key, value in export_weights(tiny.weight_map()).items():
        assert loaded[key].dtype == np.float32
        np.testing.assert_allclose(loaded[key], value, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="weights_dtype"):
        save_segmenter(tiny, tmp_path / "bad", weights_dtype="int8")


def test_corrupt_or_mismatched_weights_are_refused(tiny, tmp_path):
    from tfcxr.segment.weights import WeightsError

    save_segmenter(tiny, tmp_path / "seg")
    weights_path = tmp_path / "seg" / "weights.npz"
    data = bytearray(weights_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights_path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"weights\.npz: sha256 mismatch"):
        load_segmenter(str(tmp_path / "seg"))
    meta_path = tmp_path / "seg" / "segmenter.json"
    meta = json.loads(meta_path.read_text())
    for bad, match in (({**meta, "weights": {"file": "../weights.npz"}}, "inside the directory"),
                       ({**meta, "version": 9}, "unsupported version"),
                       ({**meta, "priors": [[0, 0, 1]]}, "priors"),
                       ({**meta, "inference": {"prompt": "gt"}}, "inference")):
        meta_path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=match):
            load_segmenter(str(tmp_path / "seg"))
    meta_path.write_text("{not json")
    with pytest.raises(ValueError, match="segmenter.json: not a readable"):
        load_segmenter(str(tmp_path / "seg"))


def test_version_1_directory_reads_its_priors_file(tiny, tmp_path):
    from tfcxr.segment.weights import export_weights, save_npz_atomic

    directory = tmp_path / "v1"
    save_npz_atomic(directory / "weights.npz", export_weights(tiny.weight_map()))
    meta = {"format": "tfcxr-segmenter", "version": 1, "kind": "litemedsam", "name": "old", "image_size": 64,
            "normalization": {"mode": "minmax"}, "config": tiny.config.to_dict(), "weights": "weights.npz"}
    (directory / "segmenter.json").write_text(json.dumps(meta))
    (directory / "lung_priors.json").write_text(json.dumps({"boxes": [[0.1, 0.1, 0.4, 0.8], [0.6, 0.1, 0.9, 0.8]]}))
    loaded = load_segmenter(str(directory))
    np.testing.assert_allclose(loaded.priors, [[0.1, 0.1, 0.4, 0.8], [0.6, 0.1, 0.9, 0.8]])
    assert loaded.inference.prompt == "refine" and loaded.mask_definition["name"] == "unspecified"

