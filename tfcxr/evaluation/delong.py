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

Patients with several images (NIH follow-ups) are not independent draws. With `clusters` (a patient id per image)
the covariance is Obuchowski's (Biometrics 53, 1997): the placements are summed per patient, V10_i and V01_i for
patient i with m_i positive and n_i negative images, and with M, N the totals and I10, I01, I the patients with a
positive image, with a negative image and in all,

    S10 = I10 / ((I10 - 1) M) sum_i (V10_i - m_i AUC)(V10_i - m_i AUC)^T
    S01 = I01 / ((I01 - 1) N) sum_i (V01_i - n_i AUC)(V01_i - n_i AUC)^T
    S11 = I / (I - 1)        sum_i (V10_i - m_i AUC)(V01_i - n_i AUC)^T
    S   = S10 / M + S01 / N + (S11 + S11^T) / (M N)

With one image per patient this is DeLong's S above.
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


def delong_covariance(y_true, scores, clusters=None):
    """AUROCs of k models and their DeLong covariance, clustered by patient when `clusters` is given.

    Args:
        y_true: (num_images,) 0/1 labels with at least one positive and one negative.
        scores: (k, num_images) scores of k models on the same images.
        clusters: optional (num_images,) patient id per image (any hashable dtype); None: every image is its
            own patient.

    Returns:
        `(aucs, cov)`: float64 (k,) and (k, k). The covariance is NaN when fewer than 2 patients have a positive
        image or fewer than 2 have a negative one (no spread to estimate it from).
    """
    y = np.asarray(y_true).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != y.shape[0]:
        raise ValueError(f"`scores` must be (k, {y.shape[0]}). Received shape {s.shape}")
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError(f"DeLong needs positives and negatives. Received {m} positives, {n} negatives")
    if clusters is None:
        patient = np.arange(y.size)
    else:
        ids = np.asarray(clusters).astype(str)
        if ids.shape != y.shape:
            raise ValueError(f"`clusters` must be ({y.shape[0]},), one patient per image. Received shape {ids.shape}")
        patient = np.unique(ids, return_inverse=True)[1].reshape(-1)
    x, yy = s[:, y], s[:, ~y]  # (k, m), (k, n)
    tx, ty = midranks(x), midranks(yy)
    tz = midranks(np.concatenate([x, yy], axis=1))  # (k, m + n)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n  # (k, m)
    v01 = 1.0 - (tz[:, m:] - ty) / m  # (k, n)
    num_patients = int(patient.max()) + 1

    def per_patient(values, rows):  # (k, images of one class) -> (k, num_patients) sums
        return np.stack([np.bincount(rows, weights=v, minlength=num_patients) for v in values])

    pos_rows, neg_rows = patient[y], patient[~y]
    m_i = np.bincount(pos_rows, minlength=num_patients)
    n_i = np.bincount(neg_rows, minlength=num_patients)
    d10 = per_patient(v10, pos_rows) - m_i * aucs[:, None]  # (k, num_patients)
    d01 = per_patient(v01, neg_rows) - n_i * aucs[:, None]
    i10, i01 = int(np.sum(m_i > 0)), int(np.sum(n_i > 0))
    if i10 < 2 or i01 < 2:
        return aucs, np.full((s.shape[0], s.shape[0]), np.nan)
    s10 = i10 / ((i10 - 1) * m) * (d10 @ d10.T)
    s01 = i01 / ((i01 - 1) * n) * (d01 @ d01.T)
    s11 = num_patients / (num_patients - 1) * (d10 @ d01.T)
    return aucs, s10 / m + s01 / n + (s11 + s11.T) / (m * n)


def delong_test(y_true, scores_a, scores_b, clusters=None):
    """Two-sided DeLong test of AUROC(a) == AUROC(b) on the same images.

    Args:
        y_true: (num_images,) 0/1 labels.
        scores_a, scores_b: (num_images,) scores of two models, same image order.
        clusters: optional (num_images,) patient id per image: the clustered covariance (module docstring).

    Returns:
        dict {"auc_a", "auc_b", "diff", "z", "p_value", "undefined"}; NaN z and p with a reason in "undefined"
        when the class has no positives or no negatives (NaN AUROCs too), when fewer than 2 patients hold a
        positive (or a negative) image, or when the difference has zero variance but is not 0. Identical
        rankings give z = 0, p = 1.
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
    aucs, cov = delong_covariance(y, np.stack([scores_a, scores_b]), clusters)
    diff = float(aucs[0] - aucs[1])
    out = {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "z": math.nan, "p_value": math.nan,
           "undefined": None}
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if math.isnan(var):
        out["undefined"] = "fewer than 2 patients with a positive or with a negative image"
    elif abs(diff) < 1e-12:
        out.update(z=0.0, p_value=1.0)
    elif var <= 1e-15:
        out["undefined"] = "the AUROCs differ but the difference has no variance"
    else:
        out["z"] = diff / math.sqrt(var)
        out["p_value"] = math.erfc(abs(out["z"]) / math.sqrt(2.0))
    return out
