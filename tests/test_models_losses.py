"""tfcxr.models.losses: positive_weights, WeightedBinaryCrossentropy and build_loss."""

import logging

import keras
import numpy as np
import pytest

import tfcxr.models as models


def test_bad_names_echo_value():
    with pytest.raises(ValueError, match="Received: loss='l2'"):
        models.build_loss("l2")


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


def test_positive_weights_are_capped_floored_and_logged(caplog):
    labels = np.zeros((1000, 3))
    labels[0, 0] = 1  # 999 negatives per positive
    labels[:700, 1] = 1  # more positives than negatives
    with caplog.at_level(logging.WARNING, logger="tfcxr.models.losses"):
        assert models.positive_weights(labels) == [100.0, 1.0, 1.0]
    assert "class 2 has no positive training example" in caplog.text
    assert "class 0" not in caplog.text and "class 1" not in caplog.text
    assert models.positive_weights(labels, max_weight=5.0)[0] == 5.0
    assert models.positive_weights(labels[:10], max_weight=1e6)[0] == pytest.approx(9.0)


def test_weighted_bce_per_class_weights_and_clipping():
    y = np.array([[1, 0], [1, 1]], np.float32)
    p = np.array([[0.5, 0.2], [0.9, 0.6]], np.float32)
    loss = models.WeightedBinaryCrossentropy([4.0, 1.0])
    per_example = -np.array([(4 * np.log(0.5) + np.log(0.8)) / 2, (4 * np.log(0.9) + np.log(0.6)) / 2])
    np.testing.assert_allclose(float(loss(y, p)), per_example.mean(), rtol=1e-5)
    # A confident wrong prediction is clipped to 1e-7, not log(0).
    worst = float(models.WeightedBinaryCrossentropy([1.0, 1.0])(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]])))
    assert worst == pytest.approx(-np.log(1e-7) / 2, rel=1e-3)


def test_weighted_bce_serialises_with_its_weights():
    loss = models.WeightedBinaryCrossentropy([2, 3.5])
    assert loss.pos_weight == [2.0, 3.5] and loss.get_config()["pos_weight"] == [2.0, 3.5]
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, models.WeightedBinaryCrossentropy) and again.pos_weight == [2.0, 3.5]
    y, p = np.array([[1.0, 0.0]]), np.array([[0.3, 0.4]])
    assert float(again(y, p)) == pytest.approx(float(loss(y, p)))


def test_build_loss_by_name():
    labels = np.array([[1, 0], [0, 0], [0, 1], [0, 1]])
    weighted = models.build_loss("weighted_bce", labels)
    assert isinstance(weighted, models.WeightedBinaryCrossentropy)
    assert weighted.pos_weight == models.positive_weights(labels) == [3.0, 1.0]
    with pytest.raises(ValueError, match="loss='weighted_bce' needs `train_labels`"):
        models.build_loss("weighted_bce")
    assert isinstance(models.build_loss("bce"), keras.losses.BinaryCrossentropy)
    assert models.build_loss("focal").gamma == 2.0
    assert set(models.LOSSES) == {"bce", "weighted_bce", "focal"}
