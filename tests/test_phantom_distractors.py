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
