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


def test_bootstrap_p_is_never_zero_and_two_sided():
    assert bootstrap.bootstrap_p(np.full(999, 0.1)) == pytest.approx(2 / 1000)  # no resample at or below 0
    assert bootstrap.bootstrap_p(-np.full(999, 0.1)) == pytest.approx(2 / 1000)
    assert bootstrap.bootstrap_p(np.linspace(-1, 1, 101)) == 1.0
    assert bootstrap.bootstrap_p(np.r_[np.full(9, 0.1), -0.1, np.nan]) == pytest.approx(2 * 2 / 11)
    assert math.isnan(bootstrap.bootstrap_p([np.nan]))


def test_seeds_and_patients_interval_is_the_t_interval_without_patient_noise():
    """Three positive per-seed differences and a test set with no sampling error: the interval is the one-sample
    t interval with 2 df, which holds 0, where resampling the 3 seeds would give [0.01, 0.10]."""
    from scipy import stats

    diffs = np.array([0.01, 0.05, 0.10])
    out = bootstrap.seeds_and_patients_interval(diffs, np.repeat(diffs[:, None], 200, axis=1))
    t = stats.ttest_1samp(diffs, 0.0)
    low, high = t.confidence_interval(0.95)
    assert out["ci"] == pytest.approx([low, high]) and out["p"] == pytest.approx(t.pvalue)
    assert out["df"] == pytest.approx(2) and out["se_patients"] == 0 and out["ci"][0] < 0 < out["ci"][1]


def test_seeds_and_patients_interval_adds_the_patient_variance():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 0.02, size=500)  # the test set's error, shared by every seed's run
    same = np.full(4, 0.05)  # no training variance: a normal interval on the patient term alone
    out = bootstrap.seeds_and_patients_interval(same, same[:, None] + noise)
    assert out["df"] == math.inf and out["se_seeds"] == 0
    assert out["se_patients"] == pytest.approx(noise.std(ddof=1))
    assert out["ci"] == pytest.approx([0.05 - 1.959964 * out["se"], 0.05 + 1.959964 * out["se"]], rel=1e-5)
    spread = np.array([0.02, 0.04, 0.06, 0.08])  # both terms: wider than either alone
    both = bootstrap.seeds_and_patients_interval(spread, spread[:, None] + noise)
    assert both["se"] == pytest.approx(math.hypot(spread.std(ddof=1) / 2, noise.std(ddof=1)))
    var_seeds, var_patients = spread.var(ddof=1) / 4, noise.var(ddof=1)
    assert both["df"] == pytest.approx((var_seeds + var_patients) ** 2 / (var_seeds**2 / 3))  # Welch-Satterthwaite
    assert both["ci"][1] - both["ci"][0] > out["ci"][1] - out["ci"][0]


def test_seeds_and_patients_interval_needs_two_seeds_and_matching_shapes():
    one = bootstrap.seeds_and_patients_interval([0.1], np.full((1, 50), 0.1))
    assert one["mean"] == pytest.approx(0.1) and math.isnan(one["ci"][0]) and math.isnan(one["p"])
    nan_resamples = np.full((2, 50), np.nan)
    assert math.isnan(bootstrap.seeds_and_patients_interval([0.1, 0.2], nan_resamples)["se"])
    with pytest.raises(ValueError, match=r"\(seeds, resamples\) for 2 seeds.*\(3, 50\)"):
        bootstrap.seeds_and_patients_interval([0.1, 0.2], np.zeros((3, 50)))
