"""Tests for tfcxr.segment.preset_evaluation: the bootstrap summaries of held-out scores.

The per-test-set evaluation itself runs in the whole preset build of test_segment_build_preset.py.
"""

import numpy as np

from tfcxr.segment.preset_evaluation import bootstrap_summary


def test_bootstrap_summary_ignores_non_finite_values_and_is_seeded():
    values = [0.9, 0.8, float("nan"), 0.95, float("inf"), 0.85]
    summary = bootstrap_summary(values, resamples=200, seed=0)
    assert summary["n"] == 6 and summary["finite"] == 4
    assert summary["min"] == 0.8 and summary["max"] == 0.95
    np.testing.assert_allclose(summary["mean"], np.mean([0.9, 0.8, 0.95, 0.85]))
    assert summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1]
    assert bootstrap_summary(values, resamples=200, seed=0) == summary
    empty = bootstrap_summary([float("nan")], resamples=10, seed=0)
    assert empty == {"n": 1, "mean": None, "min": None, "max": None, "ci95": [None, None]}
