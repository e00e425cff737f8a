"""The onnxruntime predictor (tfcxr.serving.onnx_predictor): run settings from the .onnx metadata, batching, input
checks, masks from files or a segmenter, and parity with the SavedModel's bytes signature."""

import numpy as np
import pytest
import tensorflow as tf

import export_helpers as H
from tfcxr.export.savedmodel import run_savedmodel
from tfcxr.labels import TARGETS
from tfcxr.serving.onnx_predictor import OnnxPredictor


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return H.export_tiny_onnx(tmp_path_factory.mktemp("onnx"), mask="loose")


class _AllLungSegmenter:
    """A segmenter whose mask is the whole image (the `serving_fn` contract of tfcxr.export.segmenter)."""

    def serving_fn(self, images):
        return tf.ones_like(images)


def test_onnx_predictor_matches_savedmodel_bytes_signature(exported):
    from tfcxr.serving.onnx_predictor import OnnxPredictor

    _, version_dir, onnx_path, images, masks = exported
    predictor = OnnxPredictor(onnx_path, batch_size=2)
    result = predictor.predict(images, mask_paths=masks)
    reference = run_savedmodel(
        version_dir, image_bytes=[p.read_bytes() for p in images], mask_bytes=[p.read_bytes() for p in masks]
    )
    assert result["labels"] == TARGETS and result["probabilities"].shape == (3, 5)
    np.testing.assert_allclose(result["probabilities"], reference["probabilities"], atol=1e-4)
    np.testing.assert_allclose(result["no_finding"], reference["no_finding"], atol=1e-4)
    with pytest.raises(ValueError, match="mask='loose'"):
        predictor.predict(images)


def test_onnx_predictor_names_a_bad_file(exported, tmp_path):
    from tfcxr.data.io import ImageReadError
    from tfcxr.serving.onnx_predictor import OnnxPredictor

    _, _, onnx_path, images, masks = exported
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="broken.png"):
        OnnxPredictor(onnx_path).predict([bad], mask_paths=masks[:1])


def test_run_settings_come_from_the_onnx_metadata(exported, tmp_path):
    run, _, onnx_path, _, _ = exported
    predictor = OnnxPredictor(onnx_path)
    assert predictor.info.mask == "loose" and predictor.info.needs_mask
    assert predictor.info.image_size == H.TINY_SIZE and predictor.info.margin == 0.05
    assert predictor.info.rundir == run and predictor.labels == TARGETS
    with pytest.raises(FileNotFoundError, match="absent.onnx: ONNX model not found"):
        OnnxPredictor(tmp_path / "absent.onnx")


def test_predict_images_batches_and_checks_shapes(exported):
    _, version_dir, onnx_path, _, _ = exported
    images = np.random.default_rng(3).random((5, H.TINY_SIZE, H.TINY_SIZE, 1), np.float32)
    in_twos = OnnxPredictor(onnx_path, batch_size=2).predict_images(images)  # 2 + 2 + 1
    at_once = OnnxPredictor(onnx_path, batch_size=16).predict_images(images)
    assert in_twos["probabilities"].shape == (5, 5) and in_twos["no_finding"].shape == (5,)
    for name in ("probabilities", "no_finding"):
        np.testing.assert_allclose(in_twos[name], at_once[name], atol=1e-6)
    reference = run_savedmodel(version_dir, images=images)  # outputs not swapped or reordered
    np.testing.assert_allclose(in_twos["probabilities"], reference["probabilities"], atol=1e-4)
    np.testing.assert_allclose(in_twos["no_finding"], 1.0 - in_twos["probabilities"].max(axis=1), atol=1e-5)
    predictor = OnnxPredictor(onnx_path)
    for bad in (images[:0], images[..., 0], np.zeros((1, 16, 16, 1), np.float32)):
        with pytest.raises(ValueError, match=r"must be \(batch >= 1, 32, 32, 1\) float32. Received: \("):
            predictor.predict_images(bad)


def test_one_mask_per_image_or_a_segmenter(exported, tmp_path):
    _, _, onnx_path, images, masks = exported
    with pytest.raises(ValueError, match="Got 3 images but 1 masks"):
        OnnxPredictor(onnx_path).predict(images, mask_paths=masks[:1])
    full = []
    for i, image in enumerate(images):  # all-lung mask files of each image's size
        full.append(tmp_path / f"full{i}.png")
        full[-1].write_bytes(H.png_bytes(np.full(tf.io.decode_png(image.read_bytes()).shape[:2], 255, np.uint8)))
    segmented = OnnxPredictor(onnx_path, segmenter=_AllLungSegmenter()).predict(images)  # no mask files needed
    from_files = OnnxPredictor(onnx_path).predict(images, mask_paths=full)
    np.testing.assert_allclose(segmented["probabilities"], from_files["probabilities"], atol=1e-6)
    lungs = OnnxPredictor(onnx_path).predict(images, mask_paths=masks)
    assert np.abs(lungs["probabilities"] - segmented["probabilities"]).max() > 1e-6  # the segmenter's mask is used
