"""Tests for tfcxr.segment.mask_components: lung components, their boxes, cleaning and mask stability."""

import numpy as np
import pytest

from mask_fakes import two_lungs
from tfcxr.segment import mask_components


def test_components_and_boxes_left_to_right():
    mask = two_lungs()
    mask[0:2, 0:2] = True  # speck, dropped (< 5% of the largest)
    parts = mask_components.lung_components(mask)
    assert len(parts) == 2 and parts[0][50, 20] and parts[1][50, 80]
    np.testing.assert_array_equal(mask_components.component_boxes(mask), [[10, 20, 49, 79], [70, 15, 109, 84]])
    assert mask_components.component_boxes(np.zeros((5, 5), bool)).shape == (0, 4)
    with pytest.raises(ValueError, match="2-D"):
        mask_components.lung_components(np.zeros((2, 2, 2)))


def test_clean_fills_holes_and_keeps_two_largest():
    mask = two_lungs()
    mask[40:50, 20:30] = False  # hole
    mask[90:95, 55:60] = True  # third, small component
    cleaned = mask_components.clean_lung_mask(mask)
    assert cleaned[45, 25] and not cleaned[92, 57]
    assert cleaned.sum() == two_lungs().sum()


def test_mask_stability_is_high_for_sharp_borders_and_low_for_vague_ones():
    yy, xx = np.mgrid[:64, :64]
    distance = np.minimum(np.hypot(xx - 18, yy - 32), np.hypot(xx - 46, yy - 32)) - 10  # two round "lungs"
    sharp, vague = -distance * 100.0, -distance * 0.3  # logits: steep or shallow across the border
    assert mask_components.mask_stability(sharp) > 0.95 and mask_components.mask_stability(vague) < 0.7
    assert mask_components.mask_stability(np.full((8, 8), -50.0)) == 1.0  # nothing on either side
