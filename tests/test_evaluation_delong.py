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
