"""Tests of tfcxr.data.phantom_distractors: bright context outside (and not next to) the lungs."""

import cv2
import numpy as np

from tfcxr.data import phantom_anatomy, phantom_distractors


def test_zero_on_and_next_to_the_lungs():
    _, union, _ = phantom_anatomy.draw_anatomy(0, 1, "PA", 96)
    near = cv2.dilate(union, np.ones((3, 3), np.uint8)).astype(bool)
    for seed in range(5):
        layer = phantom_distractors.draw_distractors("PA", union, 96, np.random.default_rng(seed))
        assert layer.shape == (96, 96) and layer.dtype == np.float32
        assert not layer[near].any()
        assert layer.max() > 0  # the side marker is always drawn


def test_the_tube_runs_down_between_the_lungs_and_never_onto_them():
    _, union, _ = phantom_anatomy.draw_anatomy(0, 1, "PA", 96)
    near = cv2.dilate(union, np.ones((3, 3), np.uint8)).astype(bool)
    columns = np.flatnonzero(union.any(axis=0))
    for seed in range(5):
        layer = phantom_distractors.draw_tube(union, 96, np.random.default_rng(seed))
        assert layer.shape == (96, 96) and layer.dtype == np.float32 and not layer[near].any()
        drawn = np.argwhere(layer > 0.3)
        assert drawn[:, 0].min() == 0 and drawn[:, 0].max() < 96 // 2  # from the top edge, above mid-height
        assert abs(drawn[:, 1].mean() - (columns[0] + columns[-1]) / 2) < 4  # on the midline
