"""Tests for tfcxr.segment.losses: Dice + BCE on logits."""

import numpy as np
import tensorflow as tf

from tfcxr.segment.losses import segmentation_loss


def test_loss_low_for_right_logits_high_for_wrong_ones():
    labels = np.zeros((1, 2, 8, 8), np.float32)
    labels[..., 2:6, 2:6] = 1
    good = segmentation_loss(tf.constant(labels * 20 - 10), labels)
    bad = segmentation_loss(tf.constant(10 - labels * 20), labels)
    assert float(good) < 0.05 < 1.0 < float(bad)


def test_weights_scale_the_two_terms():
    labels = np.zeros((1, 1, 4, 4), np.float32)
    labels[..., :2, :2] = 1
    logits = tf.zeros((1, 1, 4, 4))
    dice = float(segmentation_loss(logits, labels, 1.0, 0.0))
    bce = float(segmentation_loss(logits, labels, 0.0, 1.0))
    np.testing.assert_allclose(float(segmentation_loss(logits, labels, 2.0, 3.0)), 2 * dice + 3 * bce, rtol=1e-6)
    np.testing.assert_allclose(bce, np.log(2.0), rtol=1e-6)
