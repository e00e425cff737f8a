"""The report's score columns (tfcxr.evaluation.columns): their order, the macro key and the No Finding score."""

import numpy as np
import pytest

from tfcxr.evaluation.columns import COLUMNS, MACRO, no_finding_scores
from tfcxr.labels import NO_FINDING, TARGETS


def test_columns_are_the_targets_then_no_finding():
    """Bootstrap column k < 5 is target k (the prediction files' order), the last one No Finding."""
    assert COLUMNS[: len(TARGETS)] == TARGETS and COLUMNS[-1] == NO_FINDING and len(COLUMNS) == len(TARGETS) + 1
    assert len(set(COLUMNS)) == len(COLUMNS)
    assert MACRO not in COLUMNS  # the macro entry of metrics.json never shadows a class


def test_no_finding_scores_follow_the_method():
    probs = np.random.default_rng(0).random((6, len(TARGETS)))  # float64 in, like the prediction files
    best = no_finding_scores(probs, "max")
    assert best.dtype == np.float64 and best.shape == (6,)
    np.testing.assert_allclose(best, 1.0 - probs.max(axis=1), atol=1e-6)
    np.testing.assert_allclose(no_finding_scores(probs, "prod"), np.prod(1.0 - probs, axis=1), atol=1e-6)
    with pytest.raises(ValueError, match="method='mean'"):
        no_finding_scores(probs, "mean")
