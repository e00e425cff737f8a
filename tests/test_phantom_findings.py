"""Tests of tfcxr.data.phantom_findings: one layer per finding, boxes, seeded."""

import numpy as np
import pytest

from tfcxr.data import phantom_anatomy, phantom_findings
from tfcxr.labels import TARGETS

_BOXED = {"Mass", "Nodule", "Pneumonia"}


def _lungs(size=96):
    return phantom_anatomy.draw_anatomy(0, 1, "PA", size)[2]


def test_no_findings_draw_nothing():
    layer, boxes = phantom_findings.draw_findings((), _lungs(), 96, np.random.default_rng(0))
    assert layer.shape == (96, 96) and layer.dtype == np.float32
    assert not layer.any() and boxes == []


@pytest.mark.parametrize("target", TARGETS)
def test_each_finding_adds_intensity_and_its_boxes(target):
    layer, boxes = phantom_findings.draw_findings((target,), _lungs(), 96, np.random.default_rng(1))
    assert layer.max() > 0.05 and layer.min() >= 0
    assert {label for label, *_ in boxes} == ({target} & _BOXED)


def test_seeded_and_order_independent_of_the_tuple():
    lungs = _lungs()
    a, boxes_a = phantom_findings.draw_findings(("Pneumonia", "Mass"), lungs, 96, np.random.default_rng(2))
    b, boxes_b = phantom_findings.draw_findings(("Mass", "Pneumonia"), lungs, 96, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert boxes_a == boxes_b and [label for label, *_ in boxes_a] == ["Mass", "Pneumonia"]
