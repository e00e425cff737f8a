"""Tests for tfcxr.segment.onnx_encoder: the ONNX Runtime embed backend against the TF reference (tiny model)."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")


def test_onnx_backend_matches_tf_and_reuses_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TFCXR_CACHE", str(tmp_path / "cache"))
    from tfcxr.segment import load_segmenter
    from tfcxr.segment.onnx_encoder import onnx_path
    from tfcxr.segment.eager_masks import segment_lungs

    model = load_segmenter("tiny")
    rng = np.random.default_rng(0)
    images = [rng.random((72, 64, 1), dtype=np.float32), rng.random((64, 80, 1), dtype=np.float32)]
    pixel_values, _ = model.preprocess(images)
    reference = model.embed(pixel_values).numpy()
    masks = segment_lungs(model, images, "refine")

    model.set_embed_backend("onnx")
    path = onnx_path(model)
    assert path.is_file() and path.parent == tmp_path / "cache" / "onnx" and not model._embed_fn.reused
    np.testing.assert_allclose(model.embed(pixel_values).numpy(), reference, atol=1e-4)
    for fast, ref in zip(segment_lungs(model, images, "refine"), masks):
        np.testing.assert_array_equal(fast, ref)

    mtime = path.stat().st_mtime_ns
    model.set_embed_backend("onnx")  # a second session reads the cached export
    assert model._embed_fn.reused and path.stat().st_mtime_ns == mtime
    assert not list(path.parent.glob(".*.tmp"))
    model.set_embed_backend("tf")
    np.testing.assert_array_equal(model.embed(pixel_values).numpy(), reference)
    with pytest.raises(ValueError, match="backend"):
        model.set_embed_backend("tensorrt")
