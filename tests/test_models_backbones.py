"""tfcxr.models.backbones: the tiny CNN, keras.applications backbones, backbone-only weights files."""

import json

import keras
import numpy as np
import pytest

import tfcxr.models as models
from tfcxr.models.backbones import (
    backbone_metadata_path,
    is_backbone_weights,
    load_backbone_weights,
    save_backbone_weights,
    tiny_backbone,
)


def test_imagenet_download_failure_is_clear(monkeypatch):
    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    with pytest.raises(models.WeightsUnavailableError, match="--weights none"):
        models.build_backbone("resnet50", 32, "imagenet")


def test_other_application_errors_are_not_reworded(monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("URL fetch failure but weights were not asked for")

    monkeypatch.setattr(keras.applications, "ResNet50", broken)
    with pytest.raises(RuntimeError, match="weights were not asked for") as caught:
        models.build_backbone("resnet50", 32, None)
    assert not isinstance(caught.value, models.WeightsUnavailableError)

    def bad_shape(**kwargs):
        raise ValueError("input_shape too small")

    monkeypatch.setattr(keras.applications, "ResNet50", bad_shape)
    with pytest.raises(ValueError, match="input_shape too small"):
        models.build_backbone("resnet50", 32, "imagenet")


def test_application_is_called_as_a_pooled_notop_extractor(monkeypatch):
    calls = []
    monkeypatch.setattr(keras.applications, "DenseNet121", lambda **kwargs: calls.append(kwargs) or "built")
    assert models.build_backbone("densenet121", 64, "imagenet") == "built"
    assert calls == [{"include_top": False, "weights": "imagenet", "input_shape": (64, 64, 3), "pooling": "avg"}]


def test_tiny_backbone_shapes():
    model = models.build_backbone("tiny", 32)
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 2 * 96)
    custom = tiny_backbone(48, channels=3, widths=(4, 8, 8, 12), name="small")
    assert custom.name == "small" and custom.input_shape == (None, 48, 48, 3)
    features = custom.predict(np.zeros((2, 48, 48, 3), np.float32), verbose=0)
    assert features.shape == (2, 24)


def test_build_backbone_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"`image_size` must be >= 16 for backbone='tiny'. Received: image_size=8"):
        models.build_backbone("tiny", 8)
    with pytest.raises(ValueError, match=r">= 32 for backbone='resnet50'. Received: image_size=16"):
        models.build_backbone("resnet50", 16)
    with pytest.raises(ValueError, match="backbone='tiny' has no pretrained weights"):
        models.build_backbone("tiny", 32, "imagenet")
    with pytest.raises(FileNotFoundError, match="missing_notop.h5: backbone weights file not found"):
        models.build_backbone("resnet50", 32, str(tmp_path / "missing_notop.h5"))
    with pytest.raises(ValueError, match="Received: backbone='vgg16'"):
        models.build_backbone("vgg16", 32)


def test_backbone_weights_names():
    assert is_backbone_weights("runs/pre/simsiam_tiny.backbone.weights.h5")
    assert is_backbone_weights("backbone.weights.h5")
    assert not is_backbone_weights("runs/a/best.weights.h5")
    assert not is_backbone_weights("runs/backbone.weights.h5/best.keras")
    assert backbone_metadata_path("runs/pre/x.backbone.weights.h5") == "runs/pre/x.backbone.json"


def test_save_and_load_backbone_weights_round_trip(tmp_path):
    saved = tiny_backbone(32)
    path = tmp_path / "pre.backbone.weights.h5"
    metadata = {"backbone": "tiny", "epochs": 3}
    weights_path, meta_path = save_backbone_weights(saved, path, metadata)
    assert (weights_path, meta_path) == (str(path), str(tmp_path / "pre.backbone.json"))
    assert json.loads((tmp_path / "pre.backbone.json").read_text()) == metadata

    fresh = models.build_backbone("tiny", 32)
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), saved.get_weights()))
    load_backbone_weights(fresh, str(path), "tiny")
    for got, expected in zip(fresh.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(got, expected)


def test_save_backbone_weights_rejects_bad_names(tmp_path):
    model = tiny_backbone(32)
    with pytest.raises(ValueError, match=r"must end with 'backbone.weights.h5'. Received: path='.*model.weights.h5'"):
        save_backbone_weights(model, tmp_path / "model.weights.h5", {"backbone": "tiny"})
    with pytest.raises(ValueError, match="Received: backbone='resnet51'"):
        save_backbone_weights(model, tmp_path / "a.backbone.weights.h5", {"backbone": "resnet51"})
    assert list(tmp_path.iterdir()) == []  # nothing written for a bad call


def test_load_backbone_weights_errors_name_the_file(tmp_path):
    model = tiny_backbone(32)
    with pytest.raises(FileNotFoundError, match="nope.backbone.weights.h5: backbone weights file not found"):
        load_backbone_weights(model, str(tmp_path / "nope.backbone.weights.h5"), "tiny")

    path = tmp_path / "pre.backbone.weights.h5"
    save_backbone_weights(model, path, {"backbone": "tiny"})
    with pytest.raises(ValueError, match=r"pre.backbone.weights.h5: these weights are for backbone='tiny' .*"
                                         r"Received: backbone='densenet121'"):
        load_backbone_weights(model, str(path), "densenet121")
    narrow = tiny_backbone(32, widths=(8, 16, 32, 48))
    with pytest.raises(ValueError, match=r"pre.backbone.weights.h5: the weights do not fit backbone='tiny'"):
        load_backbone_weights(narrow, str(path), "tiny")
    (tmp_path / "pre.backbone.json").unlink()  # without metadata only the shapes are checked
    with pytest.raises(ValueError, match="the weights do not fit"):
        load_backbone_weights(narrow, str(path), "tiny")
