"""Multi-label losses: BCE, positive-weighted BCE and focal loss."""

import logging

import keras
import numpy as np
from keras import ops

logger = logging.getLogger(__name__)

LOSSES = ("bce", "weighted_bce", "focal")


def positive_weights(labels, max_weight=100.0):
    """Per-class positive weights `n_negative / n_positive` from training labels.

    Args:
        labels: (examples, classes) 0/1 array.
        max_weight: cap for rare classes.

    Returns:
        list of floats, one per class; 1.0 for a class with no positives (logged).
    """
    labels = np.asarray(labels, dtype=np.float64)
    positives = labels.sum(axis=0)
    negatives = labels.shape[0] - positives
    weights = []
    for index, (pos, neg) in enumerate(zip(positives, negatives)):
        if pos == 0:
            logger.warning("class %d has no positive training example; its positive weight is 1.0", index)
            weights.append(1.0)
        else:
            weights.append(float(min(max(neg / pos, 1.0), max_weight)))
    return weights


@keras.saving.register_keras_serializable(package="tfcxr")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy with per-class positive weights.

    loss = -mean_k [w_k * y_k * log(p_k) + (1 - y_k) * log(1 - p_k)]

    Args:
        pos_weight: list of floats, one per class (see `positive_weights`).

    Call:
        y_true: (batch, classes) in {0, 1}; y_pred: (batch, classes) probabilities.
    """

    def __init__(self, pos_weight, name="weighted_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pos_weight = [float(w) for w in pos_weight]

    def call(self, y_true, y_pred):
        y_pred = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0 - 1e-7)
        y_true = ops.cast(y_true, "float32")
        weight = ops.convert_to_tensor(self.pos_weight, "float32")
        terms = weight * y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred)
        return -ops.mean(terms, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"pos_weight": self.pos_weight})
        return config


def build_loss(name, train_labels=None):
    """Loss by name.

    Args:
        name: `"bce"`, `"weighted_bce"` (needs `train_labels`) or `"focal"`
            (keras.losses.BinaryFocalCrossentropy, gamma 2).
        train_labels: (examples, classes) 0/1 array, for `weighted_bce`.

    Returns:
        keras.losses.Loss.
    """
    if name == "bce":
        return keras.losses.BinaryCrossentropy()
    if name == "focal":
        return keras.losses.BinaryFocalCrossentropy(gamma=2.0)
    if name == "weighted_bce":
        if train_labels is None:
            raise ValueError("loss='weighted_bce' needs `train_labels` to compute positive weights.")
        return WeightedBinaryCrossentropy(positive_weights(train_labels))
    raise ValueError(f"`loss` must be one of {LOSSES}. Received: loss={name!r}")
