"""Fast DeLong test (tfcxr.evaluation.delong) against the O(m n) definition: midranks, covariance, paired p-values."""

import math

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from evaluation_fakes import toy_scores
from tfcxr.evaluation import delong


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
    y, sa = toy_scores(70, seed=4, ties=ties)
    sb = sa + np.random.default_rng(5).normal(0, 0.8, y.size)
    if ties:
        sb = np.round(sb, 1)
    fast = delong.delong_test(y, sa, sb)
    auc_a, auc_b, p = _slow_delong(y, sa, sb)
    assert fast["auc_a"] == pytest.approx(auc_a) and fast["auc_a"] == pytest.approx(roc_auc_score(y, sa))
    assert fast["auc_b"] == pytest.approx(auc_b)
    assert fast["p_value"] == pytest.approx(p)


def test_delong_identical_models_and_missing_class():
    y, s = toy_scores(30)
    assert delong.delong_test(y, s, s)["p_value"] == 1.0
    out = delong.delong_test(np.zeros(4, int), np.arange(4.0), np.arange(4.0))
    assert math.isnan(out["p_value"]) and out["undefined"] == "no positives in the test set"
    np.testing.assert_array_equal(delong.midranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_midranks_rank_each_row_of_the_last_axis():
    values = np.round(np.random.default_rng(0).normal(size=(2, 3, 9)), 0)  # many ties
    ranks = delong.midranks(values)
    assert ranks.shape == values.shape
    for row, expected in zip(values.reshape(-1, 9), ranks.reshape(-1, 9)):
        np.testing.assert_allclose(expected, rankdata(row))


def test_covariance_of_k_models_agrees_with_each_model_alone():
    y, s0 = toy_scores(50, seed=8)
    s1 = s0 + np.random.default_rng(9).normal(0, 1.0, y.size)
    s2 = -s0
    aucs, cov = delong.delong_covariance(y, np.stack([s0, s1, s2]))
    assert cov.shape == (3, 3)
    np.testing.assert_allclose(cov, cov.T)
    for k, s in enumerate((s0, s1, s2)):
        alone_auc, alone_cov = delong.delong_covariance(y, s)
        assert aucs[k] == pytest.approx(roc_auc_score(y, s)) == pytest.approx(alone_auc[0])
        assert cov[k, k] == pytest.approx(alone_cov[0, 0])
    assert aucs[2] == pytest.approx(1.0 - aucs[0])  # reversed scores: mirrored AUROC, same variance
    assert cov[2, 2] == pytest.approx(cov[0, 0]) and cov[0, 2] == pytest.approx(-cov[0, 0])


def test_delong_input_errors_and_no_negatives():
    with pytest.raises(ValueError, match=r"same shape. Received \(3,\), \(4,\), \(4,\)"):
        delong.delong_test(np.array([0, 1, 0, 1]), np.arange(3.0), np.arange(4.0))
    with pytest.raises(ValueError, match=r"must be \(k, 4\). Received shape \(1, 3\)"):
        delong.delong_covariance(np.array([0, 1, 0, 1]), np.arange(3.0))
    with pytest.raises(ValueError, match="Received 4 positives, 0 negatives"):
        delong.delong_covariance(np.ones(4, int), np.arange(4.0))
    out = delong.delong_test(np.ones(3, int), np.arange(3.0), np.arange(3.0))
    assert out["undefined"] == "no negatives in the test set" and math.isnan(out["auc_a"])


def test_clustered_delong_is_delong_with_one_image_per_patient():
    y, sa = toy_scores(60, seed=2, ties=True)
    sb = sa + np.random.default_rng(3).normal(0, 0.7, y.size)
    plain = delong.delong_test(y, sa, sb)
    singletons = delong.delong_test(y, sa, sb, clusters=[f"p{k}" for k in range(y.size)])
    assert singletons["p_value"] == pytest.approx(plain["p_value"]) and singletons["z"] == pytest.approx(plain["z"])


def test_clustered_delong_counts_a_patients_copies_once():
    """Every image twice under one patient: the AUROCs stay, the clustered variance is that of one copy, and the
    unclustered test, which takes the copies as independent, shrinks the variance by half (z grows by sqrt 2)."""
    y, sa = toy_scores(50, seed=6)
    sb = sa + np.random.default_rng(7).normal(0, 0.8, y.size)
    twice = [np.r_[v, v] for v in (y, sa, sb)]
    patients = np.r_[np.arange(y.size), np.arange(y.size)]
    one = delong.delong_covariance(y, np.stack([sa, sb]))
    clustered = delong.delong_covariance(twice[0], np.stack(twice[1:]), clusters=patients)
    np.testing.assert_allclose(clustered[0], one[0])
    np.testing.assert_allclose(clustered[1], one[1], rtol=1e-10)
    naive = delong.delong_test(*twice)
    fair = delong.delong_test(*twice, clusters=patients)
    assert fair["z"] == pytest.approx(delong.delong_test(y, sa, sb)["z"])
    assert naive["z"] == pytest.approx(fair["z"] * math.sqrt(2), rel=0.05)


def test_clustered_delong_variance_matches_the_patient_bootstrap():
    """Patients with 1-5 images and a per-patient error in model a's scores: the clustered variance of the AUROC
    difference agrees with the variance over patient-bootstrap resamples (tfcxr.evaluation.bootstrap); the
    unclustered one, taking the images as independent, falls well short."""
    from tfcxr.evaluation import bootstrap

    rng = np.random.default_rng(11)
    sizes = rng.integers(1, 6, size=120)
    patients = np.repeat(np.arange(sizes.size), sizes)
    frailty = rng.normal(0, 1.0, sizes.size)[patients]  # labels cluster by patient
    y = (frailty + rng.normal(0, 0.5, patients.size) > 0.3).astype(int)
    sa = y + rng.normal(0, 1.0, sizes.size)[patients] + rng.normal(0, 0.3, y.size)
    sb = y + rng.normal(0, 1.0, y.size)
    _, cov = delong.delong_covariance(y, np.stack([sa, sb]), clusters=patients)
    var_clustered = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    _, naive = delong.delong_covariance(y, np.stack([sa, sb]))
    counts, image_patient = bootstrap.patient_resample_counts(patients, 2000, seed=0)
    weights = counts[:, image_patient].astype(np.float64)
    diff = bootstrap.weighted_auroc(y, sa, weights) - bootstrap.weighted_auroc(y, sb, weights)
    assert var_clustered == pytest.approx(np.var(diff, ddof=1), rel=0.05)
    assert naive[0, 0] + naive[1, 1] - 2 * naive[0, 1] < 0.7 * var_clustered


def test_delong_without_spread_or_with_bad_clusters_is_undefined_or_an_error():
    y = np.array([1, 0, 0, 0])
    out = delong.delong_test(y, np.array([0.9, 0.1, 0.2, 0.3]), np.array([0.2, 0.1, 0.3, 0.4]))
    assert math.isnan(out["p_value"]) and out["undefined"].startswith("fewer than 2 patients")
    y2 = np.array([1, 1, 0, 0])
    out = delong.delong_test(y2, np.array([0.9, 0.8, 0.1, 0.2]), np.array([0.9, 0.8, 0.1, 0.2]), clusters=[0, 0, 1, 1])
    assert math.isnan(out["p_value"]) and out["auc_a"] == 1.0 and out["undefined"].startswith("fewer than 2 patients")
    flat = delong.delong_test(y2, np.array([0.9, 0.8, 0.1, 0.2]), np.full(4, 0.5))  # 1.0 vs 0.5, no spread
    assert flat["diff"] == 0.5 and math.isnan(flat["p_value"]) and math.isnan(flat["z"])
    assert flat["undefined"] == "the AUROCs differ but the difference has no variance"
    with pytest.raises(ValueError, match=r"`clusters` must be \(4,\), one patient per image. Received shape \(3,\)"):
        delong.delong_covariance(y2, np.arange(4.0), clusters=[0, 1, 2])
