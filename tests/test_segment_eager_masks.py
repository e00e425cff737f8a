"""Tests for tfcxr.segment.eager_masks: eager, batched segment_lungs with every prompt strategy."""

import numpy as np
import pytest

from mask_fakes import two_lungs
from tfcxr.segment import eager_masks
from tfcxr.segment.prompts import PROMPTS, InferenceSettings


@pytest.fixture(scope="module")
def tiny():
    from tfcxr.segment import load_segmenter

    return load_segmenter("tiny")


def test_threshold_setting_changes_the_mask(tiny):
    image = np.random.default_rng(3).random((64, 64, 1), dtype=np.float32)
    low, high = (eager_masks.segment_lungs(tiny, [image], "prior", settings=InferenceSettings(threshold=t))[0]
                 for t in (-20.0, 20.0))
    assert low.sum() >= high.sum() and low.sum() > 0 and not high.any()


def test_segment_lungs_shapes_and_validation(tiny):
    rng = np.random.default_rng(0)
    images = [rng.random((90, 70, 1), dtype=np.float32), rng.random((50, 60, 1), dtype=np.float32)]
    gt = [two_lungs(90, 70), np.zeros((50, 60), bool)]  # an empty gt mask falls back to the priors
    for prompt in PROMPTS:
        masks = eager_masks.segment_lungs(tiny, images, prompt, gt_masks=gt, batch_size=1)
        assert [m.shape for m in masks] == [(90, 70), (50, 60)] and masks[0].dtype == bool
    with pytest.raises(ValueError, match="gt_masks"):
        eager_masks.segment_lungs(tiny, images, "gt")
    with pytest.raises(ValueError, match="prompt='box'"):
        eager_masks.segment_lungs(tiny, images, "box")
