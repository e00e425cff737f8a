"""Patient-level bootstrap (tfcxr.evaluation.bootstrap): resample counts, weighted AUROC / AP against sklearn,
per-resample metrics in chunks and percentile CIs."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from evaluation_fakes import toy_scores
from tfcxr.evaluation import bootstrap


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_metrics_match_sklearn_sample_weight(ties):
    y, s = toy_scores(80, ties=ties)
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
    y, s = toy_scores(300, seed=2)
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


def test_resample_counts_reject_bad_input_with_the_value():
    with pytest.raises(ValueError, match="num_resamples=0"):
        bootstrap.patient_resample_counts(["a", "b"], num_resamples=0)
    with pytest.raises(ValueError, match=r"non-empty 1-D array. Received shape \(0,\)"):
        bootstrap.patient_resample_counts([])
    with pytest.raises(ValueError, match=r"Received shape \(2, 2\)"):
        bootstrap.patient_resample_counts([["a", "b"], ["c", "d"]])


def test_weightings_without_one_class_are_nan():
    y = np.array([0, 1, 0, 1])
    s = np.array([0.1, 0.9, 0.4, 0.6])
    w = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, 3.0]])  # all, negatives only, positives only
    for values in (bootstrap.weighted_auroc(y, s, w), bootstrap.weighted_average_precision(y, s, w)):
        assert values[0] == 1.0 and np.isnan(values[1:]).all()


def test_chunked_resamples_equal_weighted_metrics_per_column(monkeypatch):
    """Many resamples are processed in chunks; every chunk and column gives the unchunked weighted metric."""
    y0, s0 = toy_scores(40, seed=6)
    y1, s1 = toy_scores(40, seed=7, ties=True)
    y, s = np.stack([y0, y1], 1), np.stack([s0, s1], 1)
    counts, image_patient = bootstrap.patient_resample_counts(np.arange(40) // 4, 25, seed=1)
    monkeypatch.setattr(bootstrap, "_CHUNK_ELEMENTS", 3 * 40)  # 3 resamples per chunk, the last one partial
    out = bootstrap.bootstrap_metrics(y, s, counts, image_patient)
    assert out["auroc"].shape == out["auprc"].shape == (25, 2)
    weights = counts[:, image_patient].astype(float)
    for k in range(2):
        np.testing.assert_allclose(out["auroc"][:, k], bootstrap.weighted_auroc(y[:, k], s[:, k], weights))
        np.testing.assert_allclose(out["auprc"][:, k], bootstrap.weighted_average_precision(y[:, k], s[:, k], weights))
    with pytest.raises(ValueError, match=r"Shapes disagree: y_true \(40, 2\), scores \(40, 1\)"):
        bootstrap.bootstrap_metrics(y, s[:, :1], counts, image_patient)


def test_percentile_ci_ignores_nan_and_needs_two_values():
    values = np.r_[np.arange(101.0), np.nan, np.inf]
    ci = bootstrap.percentile_ci(values, level=0.9)
    assert ci == {"low": pytest.approx(5.0), "high": pytest.approx(95.0), "valid_resamples": 101}
    few = bootstrap.percentile_ci([0.7, math.nan])
    assert math.isnan(few["low"]) and math.isnan(few["high"]) and few["valid_resamples"] == 1
