"""Tests of tfcxr.data.phantom: one case's radiograph and mask."""

import numpy as np
import pytest

from tfcxr.data import phantom, synthetic
from tfcxr.labels import TARGETS


@pytest.mark.parametrize("target", TARGETS)
def test_findings_drawn_inside_lungs_only(target):
    config = synthetic.SyntheticConfig(num_images=3, image_size=128, seed=5)
    case = synthetic.sample_cases(config)[0]
    with_finding, mask = phantom.render_case(case, config, findings=(target,))
    without, mask0 = phantom.render_case(case, config, findings=())
    np.testing.assert_array_equal(mask, mask0)
    diff = np.abs(with_finding.astype(int) - without.astype(int))
    assert diff[~mask].max() == 0
    assert diff[mask].sum() > 50  # visible inside


def test_shapes_dtypes_and_boxes():
    config = synthetic.SyntheticConfig(num_images=4, image_size=64, seed=2, prevalence=1.0)
    case = synthetic.sample_cases(config)[0]
    image, mask, boxes = phantom.render_case(case, config, return_boxes=True)
    assert image.shape == mask.shape == (64, 64)
    assert image.dtype == np.uint8 and mask.dtype == bool
    assert {label for label, *_ in boxes} == {"Mass", "Nodule", "Pneumonia"}


def test_distractors_only_outside_lungs():
    config = synthetic.SyntheticConfig(num_images=6, image_size=96, seed=4)
    plain = synthetic.SyntheticConfig(num_images=6, image_size=96, seed=4, distractors=False)
    for case in synthetic.sample_cases(config):
        with_distractors, mask = phantom.render_case(case, config, findings=())
        without, _ = phantom.render_case(case, plain, findings=())
        assert np.array_equal(with_distractors[mask], without[mask])
