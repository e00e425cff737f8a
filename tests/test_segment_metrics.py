"""Tests for tfcxr.segment.metrics (Dice, IoU, HD95)."""

import numpy as np
import pytest

from tfcxr.segment import metrics


def _square(size, top, left, side):
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_dice_iou_known_values():
    a = _square(20, 0, 0, 10)  # 100 px
    b = _square(20, 0, 5, 10)  # 100 px, overlap 50
    assert metrics.dice(a, b) == pytest.approx(2 * 50 / 200)
    assert metrics.iou(a, b) == pytest.approx(50 / 150)
    assert metrics.dice(a, a) == 1.0 and metrics.iou(a, a) == 1.0


def test_empty_conventions():
    empty = np.zeros((8, 8), bool)
    full = _square(8, 2, 2, 3)
    assert metrics.dice(empty, empty) == 1.0 and metrics.iou(empty, empty) == 1.0
    assert metrics.hd95(empty, empty) == 0.0
    assert metrics.dice(empty, full) == 0.0
    assert metrics.hd95(empty, full) == float("inf")


def test_hd95_shifted_square_and_spacing():
    a = _square(40, 10, 10, 10)
    b = _square(40, 10, 13, 10)  # shifted 3 px right
    assert metrics.hd95(a, a) == 0.0
    assert metrics.hd95(a, b) == pytest.approx(3.0)
    assert metrics.hd95(a, b, spacing=0.5) == pytest.approx(1.5)
    assert metrics.segmentation_metrics(a, b)["hd95"] == pytest.approx(3.0)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        metrics.dice(np.zeros((4, 4)), np.zeros((4, 5)))
