"""Tests of tfcxr.data.phantom_anatomy: per-patient anatomy, exact lung masks, follow-up shifts."""

import cv2
import numpy as np

from tfcxr.data import phantom_anatomy


def test_two_exact_lungs_read_only_and_cached():
    base, union, lungs = phantom_anatomy.draw_anatomy(0, 1, "PA", 96)
    assert base.shape == union.shape == (96, 96) and base.dtype == np.float32
    assert set(np.unique(union)) == {0, 1}
    count, _ = cv2.connectedComponents(union)
    assert count - 1 == 2
    np.testing.assert_array_equal(union, lungs[0]["mask"] | lungs[1]["mask"])
    assert not base.flags.writeable and not union.flags.writeable
    assert lungs[0]["hilum"][0] < lungs[1]["hilum"][0]  # right lung (image left) first
    assert phantom_anatomy.draw_anatomy(0, 1, "PA", 96)[0] is base


def test_anatomy_depends_on_patient_and_view():
    pa = phantom_anatomy.draw_anatomy(0, 1, "PA", 64)[0]
    assert not np.array_equal(pa, phantom_anatomy.draw_anatomy(0, 2, "PA", 64)[0])
    assert not np.array_equal(pa, phantom_anatomy.draw_anatomy(0, 1, "AP", 64)[0])  # larger heart
    np.testing.assert_array_equal(
        phantom_anatomy.patient_anatomy(3, 7)["jitter"], phantom_anatomy.patient_anatomy(3, 7)["jitter"]
    )


def test_shift_moves_masks_boxes_and_hila():
    base, union, lungs = phantom_anatomy.draw_anatomy(0, 1, "PA", 64)
    assert phantom_anatomy.shift_anatomy(base, union, lungs, 0, 0)[0] is base
    moved_base, moved_union, moved = phantom_anatomy.shift_anatomy(base, union, lungs, 2, -1)
    np.testing.assert_array_equal(moved_union[1:-1, 3:-1], union[2:, 1:-3])
    assert moved[0]["box"] == tuple(v + d for v, d in zip(lungs[0]["box"], (2, -1, 2, -1)))
    assert moved[1]["hilum"] == (lungs[1]["hilum"][0] + 2, lungs[1]["hilum"][1] - 1)
    assert moved_base.shape == base.shape
