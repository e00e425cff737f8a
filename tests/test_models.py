"""tfcxr.models: classifier shapes, preprocessing, save/load, weights, losses."""

import keras
import numpy as np
import pytest

import tfcxr.models as models
from tfcxr.labels import TARGETS


def _images(n=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 1)).astype(np.float32)


def test_tiny_classifier_shapes_and_range():
    model = models.build_classifier("tiny", 32)
    assert model.input_shape == (None, 32, 32, 1)
    probs = model.predict(_images(), verbose=0)
    assert probs.shape == (2, len(TARGETS)) and probs.dtype == np.float32
    assert np.all((probs > 0) & (probs < 1))


def test_save_load_round_trip(tmp_path):
    model = models.compile_classifier(models.build_classifier("tiny", 32), loss="weighted_bce", train_labels=np.eye(5))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(_images(), verbose=0), model.predict(_images(), verbose=0), atol=1e-6)
    assert isinstance(loaded.get_layer("preprocessor"), models.CxrPreprocessor)


def test_classifier_weights_from_path(tmp_path):
    model = models.build_classifier("tiny", 32)
    path = tmp_path / "tiny.weights.h5"
    model.save_weights(path)
    again = models.build_classifier("tiny", 32, weights=str(path))
    np.testing.assert_allclose(again.predict(_images(), verbose=0), model.predict(_images(), verbose=0), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="nope.keras"):
        models.build_classifier("tiny", 32, weights=str(tmp_path / "nope.keras"))


def test_mixed_precision_head_is_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = models.build_classifier("tiny", 32)
        assert model.get_layer("logits").dtype_policy.compute_dtype == "float32"
        assert model.get_layer("preprocessor").compute_dtype == "float32"
        assert model.predict(_images(), verbose=0).dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "mode, reference",
    [
        ("caffe", lambda x: keras.applications.resnet.preprocess_input(x * 255.0)),
        ("torch", lambda x: keras.applications.densenet.preprocess_input(x * 255.0)),
        ("raw255", lambda x: x * 255.0),
    ],
)
def test_preprocessor_matches_keras_applications(mode, reference):
    gray = _images()
    got = keras.ops.convert_to_numpy(models.CxrPreprocessor(mode, 3)(gray))
    expected = reference(np.repeat(gray, 3, axis=-1))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_keras_application_backbone_builds_offline():
    model = models.build_classifier("resnet50", 32, weights="none")
    assert model.predict(_images(1), verbose=0).shape == (1, 5)
    assert model.get_layer("preprocessor").mode == "caffe"


def test_imagenet_download_failure_is_clear(monkeypatch):
    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    with pytest.raises(models.WeightsUnavailableError, match="--weights none"):
        models.build_backbone("resnet50", 32, "imagenet")


def test_bad_names_echo_value():
    with pytest.raises(ValueError, match="Received: backbone='resnet51'"):
        models.build_classifier("resnet51", 32)
    with pytest.raises(ValueError, match="Received: loss='l2'"):
        models.build_loss("l2")
    with pytest.raises(ValueError, match="Received: mode='imagenet'"):
        models.CxrPreprocessor("imagenet")


def test_losses():
    y = np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0]], np.float32)
    p = np.full((2, 5), 0.3, np.float32)
    weights = models.positive_weights(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 0, 0, 0]]))
    assert weights == [1.0, 3.0, 1.0, 1.0, 1.0]
    loss = models.WeightedBinaryCrossentropy([2.0] * 5)
    terms = 2.0 * y * np.log(p) + (1 - y) * np.log(1 - p)
    np.testing.assert_allclose(float(loss(y, p)), -terms.mean(), rtol=1e-5)
    unweighted = models.build_loss("bce")
    assert float(models.WeightedBinaryCrossentropy([1.0] * 5)(y, p)) == pytest.approx(float(unweighted(y, p)), rel=1e-4)
    assert isinstance(models.build_loss("focal"), keras.losses.BinaryFocalCrossentropy)
