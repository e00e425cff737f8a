"""Point metrics, patient bootstrap and DeLong against slow reference definitions."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tfcxr.evaluation import bootstrap, delong, metrics


def _toy(n=60, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = y * 0.8 + rng.normal(0, 0.7, n)
    if ties:
        s = np.round(s, 1)
    return y, s


def test_class_metrics_matches_sklearn_and_sensitivity_respects_specificity():
    y, s = _toy(200)
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


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_metrics_match_sklearn_sample_weight(ties):
    y, s = _toy(80, ties=ties)
    rng = np.random.default_rng(1)
    w = rng.integers(0, 3, size=(4, y.size)).astype(float)
    auc = bootstrap.weighted_auroc(y, s, w)
    ap = bootstrap.weighted_average_precision(y, s, w)
    for b in range(4):
        assert auc[b] == pytest.approx(roc_auc_score(y, s, sample_weight=w[b]))
        assert ap[b] == pytest.approx(average_precision_score(y, s, sample_weight=w[b]))


def test_patient_bootstrap_keeps_patients_together_and_is_seeded():
    patients = np.array(["a", "a", "b", "c", "c", "c"])
    counts, image_patient = bootstrap.patient_resample_counts(patients, 50, seed=3)
    assert counts.shape == (50, 3) and np.all(counts.sum(axis=1) == 3)
    weights = counts[:, image_patient]
    assert np.all(weights[:, 0] == weights[:, 1]) and np.all(weights[:, 3] == weights[:, 5])
    again, _ = bootstrap.patient_resample_counts(patients, 50, seed=3)
    np.testing.assert_array_equal(counts, again)


def test_bootstrap_ci_covers_point_estimate_and_nan_resamples_are_dropped():
    y, s = _toy(300, seed=2)
    patients = np.arange(300) // 2
    counts, image_patient = bootstrap.patient_resample_counts(patients, 1000, seed=0)
    values = bootstrap.bootstrap_metrics(y[:, None], s[:, None], counts, image_patient)["auroc"]
    ci = bootstrap.percentile_ci(values[:, 0])
    point = roc_auc_score(y, s)
    assert ci["low"] < point < ci["high"] and ci["high"] - ci["low"] < 0.2
    assert ci["valid_resamples"] == 1000
    # One positive patient: most resamples miss it and are NaN, not a crash.
    y_rare = np.zeros(300, int)
    y_rare[:2] = 1
    rare = bootstrap.bootstrap_metrics(y_rare, s, counts, image_patient, ("auprc",))["auprc"]
    assert np.isnan(rare).any() and bootstrap.percentile_ci(rare[:, 0])["valid_resamples"] < 1000
    with pytest.raises(ValueError, match="auc"):
        bootstrap.bootstrap_metrics(y, s, counts, image_patient, ("auc",))


def _slow_delong(y, sa, sb):
    """O(m n) DeLong (1988) from the Mann-Whitney kernel, for reference."""
    out = []
    for s in (sa, sb):
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        out.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    m, n = int(y.sum()), int((1 - y).sum())
    v10 = np.stack([o[1] for o in out])
    v01 = np.stack([o[2] for o in out])
    cov = np.cov(v10) / m + np.cov(v01) / n
    diff = out[0][0] - out[1][0]
    z = diff / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return out[0][0], out[1][0], math.erfc(abs(z) / math.sqrt(2))


@pytest.mark.parametrize("ties", [False, True])
def test_fast_delong_matches_slow_definition(ties):
    y, sa = _toy(70, seed=4, ties=ties)
    sb = sa + np.random.default_rng(5).normal(0, 0.8, y.size)
    if ties:
        sb = np.round(sb, 1)
    fast = delong.delong_test(y, sa, sb)
    auc_a, auc_b, p = _slow_delong(y, sa, sb)
    assert fast["auc_a"] == pytest.approx(auc_a) and fast["auc_a"] == pytest.approx(roc_auc_score(y, sa))
    assert fast["auc_b"] == pytest.approx(auc_b)
    assert fast["p_value"] == pytest.approx(p)


def test_delong_identical_models_and_missing_class():
    y, s = _toy(30)
    assert delong.delong_test(y, s, s)["p_value"] == 1.0
    out = delong.delong_test(np.zeros(4, int), np.arange(4.0), np.arange(4.0))
    assert math.isnan(out["p_value"]) and out["undefined"] == "no positives in the test set"
    np.testing.assert_array_equal(delong.midranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


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
