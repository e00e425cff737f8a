"""Point metrics (tfcxr.evaluation.metrics) against sklearn: AUROC, AUPRC, sensitivity at specificity, macro means."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from evaluation_fakes import toy_scores
from tfcxr.evaluation import metrics


def test_class_metrics_matches_sklearn_and_sensitivity_respects_specificity():
    y, s = toy_scores(200)
    out = metrics.class_metrics(y, s, specificity=0.9)
    assert out["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert out["auprc"] == pytest.approx(average_precision_score(y, s))
    called = s >= out["threshold_at_spec"]
    spec = np.mean(~called[y == 0])
    assert spec >= 0.9
    assert out["sensitivity_at_spec"] == pytest.approx(np.mean(called[y == 1]))
    assert out["undefined"] is None


def test_class_without_positives_is_nan_with_reason():
    out = metrics.class_metrics(np.zeros(5, int), np.linspace(0, 1, 5))
    assert math.isnan(out["auroc"]) and math.isnan(out["auprc"]) and math.isnan(out["sensitivity_at_spec"])
    assert out["undefined"] == "no positives in the test set (0 of 5 images)"
    assert metrics.macro_mean([0.5, math.nan, 0.7]) == pytest.approx(0.6)


def test_metric_input_validation_echoes_values():
    with pytest.raises(ValueError, match="only 0 and 1"):
        metrics.auroc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="specificity=1.5"):
        metrics.sensitivity_at_specificity(np.array([0, 1]), np.array([0.1, 0.2]), 1.5)


def test_macro_mean_rows_matches_macro_mean_per_row():
    values = np.array([[0.6, 0.8, np.nan], [np.nan, np.nan, np.nan], [0.5, 0.7, 0.9]])
    rows = metrics.macro_mean_rows(values)
    assert rows.shape == (3,) and np.isnan(rows[1])
    np.testing.assert_allclose(rows[[0, 2]], [metrics.macro_mean(values[0]), metrics.macro_mean(values[2])])
    none = metrics.macro_mean_rows(np.zeros((4, 0)))  # no included class
    assert none.shape == (4,) and np.isnan(none).all()


def test_macro_auroc_skips_undefined_classes_with_reasons():
    from tfcxr.evaluation.metrics import macro_auroc

    y = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1]])
    scores = np.array([[0.9, 0.1, 0.2], [0.2, 0.3, 0.8], [0.8, 0.2, np.nan], [0.1, 0.4, 0.7]])
    macro, per_class, reasons = macro_auroc(y, scores, ("a", "b", "c"))
    assert per_class[0] == 1.0 and np.isnan(per_class[1]) and np.isnan(per_class[2]) and macro == 1.0
    assert reasons["b"].startswith("no positives") and reasons["c"] == "non-finite predictions"
