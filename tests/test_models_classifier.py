"""tfcxr.models.classifier: build_classifier (shapes, weights, mixed precision) and compile_classifier."""

import json

import keras
import numpy as np
import pytest

import tfcxr.models as models
from model_helpers import images as _images
from tfcxr.labels import TARGETS
from tfcxr.models.backbones import backbone_metadata_path, save_backbone_weights, tiny_backbone


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


@pytest.mark.slow
def test_keras_application_backbone_builds_offline():
    model = models.build_classifier("resnet50", 32, weights="none")
    assert model.predict(_images(1), verbose=0).shape == (1, 5)
    assert model.get_layer("preprocessor").mode == "caffe"


def test_bad_names_echo_value():
    with pytest.raises(ValueError, match="Received: backbone='resnet51'"):
        models.build_classifier("resnet51", 32)


def test_defaults_come_from_the_preset_and_head_options_apply():
    model = models.build_classifier("tiny")  # weights="none", image size from the preset
    size = models.get_preset("tiny")["default_image_size"]
    assert model.input_shape == (None, size, size, 1)
    assert model.get_layer("preprocessor").mode == "unit" and model.get_layer("preprocessor").channels == 1
    assert "dropout" in [layer.name for layer in model.layers]
    bare = models.build_classifier("tiny", 32, weights="None", dropout=0, num_classes=3)
    assert "dropout" not in [layer.name for layer in bare.layers]
    assert bare.output_shape == (None, 3)


def test_backbone_weights_file_fills_the_backbone_only(tmp_path):
    pretrained = tiny_backbone(32)
    path = tmp_path / "pre.backbone.weights.h5"
    save_backbone_weights(pretrained, path, {"backbone": "tiny"})
    model = models.build_classifier("tiny", 32, weights=str(path))
    for got, expected in zip(model.get_layer("tiny_backbone").get_weights(), pretrained.get_weights()):
        np.testing.assert_array_equal(got, expected)
    # The metadata beside the weights names the backbone they were trained for.
    meta_path = backbone_metadata_path(path)
    with open(meta_path, "w", encoding="utf-8") as handle:
        json.dump({"backbone": "densenet121"}, handle)
    with pytest.raises(ValueError, match="weights are for backbone='densenet121'"):
        models.build_classifier("tiny", 32, weights=str(path))


def test_other_weights_files_go_to_the_backbone(tmp_path):
    notop = tmp_path / "notop.h5"  # neither a classifier nor a backbone-only file
    notop.write_bytes(b"")
    with pytest.raises(ValueError, match="backbone='tiny' has no pretrained weights"):
        models.build_classifier("tiny", 32, weights=str(notop))
    with pytest.raises(ValueError, match="backbone='tiny' has no pretrained weights"):
        models.build_classifier("tiny", 32, weights="imagenet")


def test_compile_classifier_sets_loss_optimizer_and_auc():
    labels = np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 0, 0, 1]])
    model = models.compile_classifier(models.build_classifier("tiny", 32), loss="weighted_bce",
                                      learning_rate=0.05, train_labels=labels)
    assert isinstance(model.loss, models.WeightedBinaryCrossentropy)
    assert model.loss.pos_weight == models.positive_weights(labels)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.05)
    history = model.fit(_images(4), labels.astype(np.float32), epochs=1, verbose=0)
    assert "auc" in history.history and "loss" in history.history
    compiled = [m for metric in model.metrics for m in getattr(metric, "metrics", [metric])]
    auc = [m for m in compiled if isinstance(m, keras.metrics.AUC)]
    assert len(auc) == 1 and auc[0].multi_label and auc[0].num_labels == len(TARGETS)
    with pytest.raises(ValueError, match="needs `train_labels`"):
        models.compile_classifier(models.build_classifier("tiny", 32), loss="weighted_bce")


def test_bn_momentum_reaches_every_batchnorm_of_the_backbone():
    from tfcxr.models.classifier import build_classifier, set_bn_momentum

    def batchnorms(model):
        found = []
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                found.append(layer)
            if isinstance(layer, keras.Model):
                found += batchnorms(layer)
        return found

    default = build_classifier("tiny", 32)
    assert batchnorms(default) and {layer.momentum for layer in batchnorms(default)} == {0.9}  # tiny's own
    tuned = build_classifier("tiny", 32, bn_momentum=0.5)
    assert {layer.momentum for layer in batchnorms(tuned)} == {0.5}
    assert set_bn_momentum(tuned, 0.8) == len(batchnorms(tuned))
    with pytest.raises(ValueError, match="bn_momentum"):
        set_bn_momentum(tuned, 1.0)
