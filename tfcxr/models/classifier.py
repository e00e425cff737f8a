"""The classifier task: preprocessor + backbone + 5-way sigmoid head, and its compile defaults.

`build_classifier` returns a functional `keras.Model`; `compile_classifier` compiles it with the
default optimizer, loss and metric.
"""

import logging
import os

import keras

from tfcxr.labels import TARGETS
from tfcxr.models.backbones import build_backbone, is_backbone_weights, load_backbone_weights
from tfcxr.models.losses import build_loss
from tfcxr.models.preprocessor import CxrPreprocessor
from tfcxr.models.presets import get_preset

logger = logging.getLogger(__name__)

_CLASSIFIER_WEIGHT_SUFFIXES = (".keras", ".weights.h5")


def _normalise_weights(weights):
    if weights is None or str(weights).lower() == "none":
        return None
    return str(weights)


def validate_bn_momentum(momentum) -> None:
    """Raise `ValueError` unless `momentum` (a BatchNorm moving-statistics momentum) lies in [0, 1)."""
    if not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"`bn_momentum` must be in [0, 1). Received: bn_momentum={momentum!r}")


def set_bn_momentum(model, momentum: float) -> int:
    """Set the moving-statistics momentum of every BatchNormalization layer in `model` (nested models included);
    returns how many layers were changed. `momentum` must lie in [0, 1)."""
    validate_bn_momentum(momentum)

    def walk(parent):
        for layer in parent.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from walk(layer)

    layers = [layer for layer in walk(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = float(momentum)
    return len(layers)


def build_classifier(backbone="tiny", image_size=None, weights="none", dropout=0.2, num_classes=len(TARGETS),
                     bn_momentum=None):
    """Build the chest X-ray classifier.

    Args:
        backbone: a name from `tfcxr.models.presets.BACKBONES`.
        image_size: int input size S; default: the preset's.
        weights: `"none"`/`None` (random), `"imagenet"` (backbone only), a path to
            a tfcxr classifier (`.keras` or `.weights.h5`, same backbone and size),
            a backbone weights file (`*backbone.weights.h5`, e.g. from
            `python -m tfcxr.pretrain`; the head stays randomly initialised) or a
            keras.applications notop weights file (`.h5`) for the backbone.
        dropout: dropout rate before the head.
        num_classes: outputs; `len(TARGETS)` = 5.
        bn_momentum: momentum of every BatchNormalization layer's moving statistics in the backbone; None keeps
            the backbone's own (0.99 in keras.applications, 0.9 in `tiny`). A short fine-tune needs a short
            memory: with 0.99 the inference-mode statistics can lag the training weights far enough that
            predictions collapse (docs/results.md, SSL-initialised ResNet50).

    Returns:
        keras.Model: `image` (batch, S, S, 1) float32 in [0, 1] ->
        `probabilities` (batch, num_classes) float32 sigmoid, in `TARGETS` order.
        The final Dense and Activation are float32 under mixed_float16.
    """
    preset = get_preset(backbone)
    image_size = int(image_size or preset["default_image_size"])
    weights = _normalise_weights(weights)
    classifier_weights = backbone_weights = None
    if weights is not None and weights != "imagenet":
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"{weights}: weights file not found (expected 'imagenet', 'none' or a file).")
        if is_backbone_weights(weights):
            backbone_weights, weights = weights, None
        elif weights.endswith(_CLASSIFIER_WEIGHT_SUFFIXES):
            classifier_weights, weights = weights, None

    inputs = keras.Input((image_size, image_size, 1), name="image", dtype="float32")
    x = CxrPreprocessor(preset["preprocessing"], preset["channels"], name="preprocessor")(inputs)
    backbone_model = build_backbone(backbone, image_size, weights)
    if backbone_weights is not None:
        load_backbone_weights(backbone_model, backbone_weights, backbone)
    if bn_momentum is not None:
        set_bn_momentum(backbone_model, bn_momentum)
    features = backbone_model(x)  # (batch, features)
    if dropout:
        features = keras.layers.Dropout(dropout, name="dropout")(features)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(features)
    probabilities = keras.layers.Activation("sigmoid", dtype="float32", name="probabilities")(logits)
    model = keras.Model(inputs, probabilities, name=f"tfcxr_{backbone}")
    if classifier_weights is not None:
        model.load_weights(classifier_weights)
        logger.info("loaded classifier weights from %s", classifier_weights)
    return model


def backbone_layer(model):
    """The backbone (a nested `keras.Model`) of a classifier from `build_classifier`."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"{model.name}: no backbone (nested keras.Model) among its layers")


def compile_classifier(model, loss="bce", learning_rate=1e-3, train_labels=None, steps_per_execution=1):
    """Compile with the defaults: Adam, the chosen loss, Keras multi-label AUC.

    Args:
        model: from `build_classifier`.
        loss: `"bce"`, `"weighted_bce"` or `"focal"` (see `tfcxr.models.losses`).
        learning_rate: Adam learning rate.
        train_labels: (examples, 5) 0/1 training labels, for `weighted_bce`.

    Returns:
        the compiled model.
    """
    num_classes = model.output_shape[-1]
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=build_loss(loss, train_labels),
        metrics=[keras.metrics.AUC(multi_label=True, num_labels=num_classes, name="auc")],
        steps_per_execution=steps_per_execution,
    )
    return model
