"""Tests for tfcxr.segment.metrics (Dice, IoU, HD95) and tfcxr.segment.qc statistics."""

import numpy as np
import pytest

from tfcxr.segment import metrics, qc


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


def test_mask_stats_flags():
    two = np.zeros((100, 100), bool)
    two[20:80, 10:40] = True
    two[20:80, 60:90] = True
    stats = qc.mask_stats(two, image=np.random.default_rng(0).random((100, 100, 1), dtype=np.float32))
    assert stats["components"] == 2 and stats["flags"] == ""
    assert stats["balance"] == pytest.approx(1.0)
    one = np.zeros((100, 100), bool)
    one[20:80, 10:40] = True
    assert set(qc.mask_stats(one)["flags"].split(";")) == {"component_count", "imbalance"}
    assert qc.mask_stats(np.zeros((10, 10), bool), image=np.zeros((10, 10, 1)))["flags"] == "blank_image;no_lungs"


def test_overlay_outlines_the_reference_in_red():
    image = np.full((100, 80, 1), 0.5, np.float32)
    mask = np.zeros((100, 80), bool)
    mask[20:60, 10:30] = True
    reference = np.zeros((100, 80), bool)
    reference[30:90, 40:70] = True

    def red(tile):
        return (tile[..., 2] == 255) & (tile[..., 1] == 0) & (tile[..., 0] == 0)

    plain = qc.overlay(image, mask, size=100)
    outlined = qc.overlay(image, mask, size=100, reference=reference)
    assert plain.shape == outlined.shape == (100, 100, 3) and not red(plain).any()
    ys, xs = np.nonzero(red(outlined))
    assert ys.size > 50 and xs.min() >= 35 and ys.min() >= 25  # red only around the reference, right of the mask
