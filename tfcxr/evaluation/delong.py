"""Fast DeLong test for paired AUROCs (Sun & Xu, IEEE SPL 21(11), 2014).

DeLong et al. (1988) estimate the covariance of correlated AUROCs from the
placement values of each positive among the negatives (V10) and of each
negative among the positives (V01). Sun & Xu compute those placements from
three midrank vectors per model, in O(k (m + n) log(m + n)) instead of O(k m n):

    Tx = midranks of the m positive scores among themselves
    Ty = midranks of the n negative scores among themselves
    Tz = midranks of all m + n scores together (positives first)
    AUC  = (sum(Tz[:m]) - m (m + 1) / 2) / (m n)
    V10  = (Tz[:m] - Tx) / n           # (m,) share of negatives below each positive
    V01  = 1 - (Tz[m:] - Ty) / m       # (n,) share of positives above each negative
    S    = cov(V10) / m + cov(V01) / n # (k, k)

For two models, z = (AUC_1 - AUC_2) / sqrt(S11 + S22 - 2 S12), two-sided p from N(0, 1).
"""

import math

import numpy as np


def midranks(values):
    """1-based ranks with ties given the mean of their positions, along the last axis.

    Args:
        values: (..., n) floats.

    Returns:
        float64 (..., n) midranks.
    """
    x = np.asarray(values, dtype=np.float64)
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty_like(flat)
    for row, ranks in zip(flat, out):
        order = np.argsort(row, kind="mergesort")
        sorted_row = row[order]
        starts = np.flatnonzero(np.r_[True, sorted_row[1:] != sorted_row[:-1]])
        ends = np.r_[starts[1:], sorted_row.size]  # exclusive
        group_rank = (starts + ends + 1) / 2.0  # mean of 1-based positions start+1 .. end
        ranks[order] = np.repeat(group_rank, ends - starts)
    return out.reshape(x.shape)


def delong_covariance(y_true, scores):
    """AUROCs of k models and their DeLong covariance.

    Args:
        y_true: (num_images,) 0/1 labels with at least one positive and one negative.
        scores: (k, num_images) scores of k models on the same images.

    Returns:
        `(aucs, cov)`: float64 (k,) and (k, k).
    """
    y = np.asarray(y_true).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != y.shape[0]:
        raise ValueError(f"`scores` must be (k, {y.shape[0]}). Received shape {s.shape}")
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError(f"DeLong needs positives and negatives. Received {m} positives, {n} negatives")
    x, yy = s[:, y], s[:, ~y]  # (k, m), (k, n)
    tx, ty = midranks(x), midranks(yy)
    tz = midranks(np.concatenate([x, yy], axis=1))  # (k, m + n)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((s.shape[0], s.shape[0]))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((s.shape[0], s.shape[0]))
    return aucs, s10 / m + s01 / n


def delong_test(y_true, scores_a, scores_b):
    """Two-sided DeLong test of AUROC(a) == AUROC(b) on the same images.

    Args:
        y_true: (num_images,) 0/1 labels.
        scores_a, scores_b: (num_images,) scores of two models, same image order.

    Returns:
        dict {"auc_a", "auc_b", "diff", "z", "p_value", "undefined"}; NaN values and
        a reason in "undefined" when the class has no positives or no negatives.
        Identical rankings (zero variance of the difference) give z = 0, p = 1.
    """
    y = np.asarray(y_true)
    if np.asarray(scores_a).shape != y.shape or np.asarray(scores_b).shape != y.shape:
        raise ValueError(
            f"`scores_a`, `scores_b` and `y_true` must have the same shape. Received "
            f"{np.asarray(scores_a).shape}, {np.asarray(scores_b).shape}, {y.shape}"
        )
    m, n = int(np.sum(y == 1)), int(np.sum(y == 0))
    if m == 0 or n == 0:
        reason = "no positives in the test set" if m == 0 else "no negatives in the test set"
        return {"auc_a": math.nan, "auc_b": math.nan, "diff": math.nan, "z": math.nan,
                "p_value": math.nan, "undefined": reason}
    aucs, cov = delong_covariance(y, np.stack([scores_a, scores_b]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if var <= 1e-15:
        z = 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
    else:
        z = diff / math.sqrt(var)
    p = math.erfc(abs(z) / math.sqrt(2.0))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "z": float(z),
            "p_value": float(p), "undefined": None}
