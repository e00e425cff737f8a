"""Per-class ranking metrics: AUROC, AUPRC and sensitivity at a fixed specificity.

All functions take a binary label vector and a score vector of the same length.
A class whose labels hold a single value (no positives or no negatives) has no
defined AUROC: the metrics are NaN and `undefined_reason` says why, so a report
can print the reason instead of crashing.
"""

import math
import warnings

import numpy as np


def undefined_reason(y_true):
    """Why ranking metrics are undefined for `y_true`, or None when they are defined.

    Args:
        y_true: (num_images,) 0/1 labels.

    Returns:
        `str` such as "no positives in the test set (0 of 12 images)", or None.
    """
    y = np.asarray(y_true)
    n = int(y.size)
    positives = int(np.sum(y == 1))
    if n == 0:
        return "no images"
    if positives == 0:
        return f"no positives in the test set (0 of {n} images)"
    if positives == n:
        return f"no negatives in the test set ({n} of {n} images positive)"
    return None


def _check_pair(y_true, scores):
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(
            f"`y_true` and `scores` must be 1-D and of the same length. "
            f"Received: y_true.shape={y.shape}, scores.shape={s.shape}"
        )
    bad = set(np.unique(y).tolist()) - {0, 1}
    if bad:
        raise ValueError(f"`y_true` must hold only 0 and 1. Received values: {sorted(bad)}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"`scores` must be finite. Received {int(np.sum(~np.isfinite(s)))} non-finite values")
    return y.astype(np.int64), s


def auroc(y_true, scores):
    """Area under the ROC curve (sklearn), NaN when a class is missing.

    Args:
        y_true: (num_images,) 0/1 labels.
        scores: (num_images,) float scores, higher = more likely positive.

    Returns:
        `float` in [0, 1], or NaN when `undefined_reason(y_true)` is not None.
    """
    from sklearn.metrics import roc_auc_score

    y, s = _check_pair(y_true, scores)
    if undefined_reason(y):
        return math.nan
    return float(roc_auc_score(y, s))


def auprc(y_true, scores):
    """Area under the precision-recall curve as sklearn's average precision.

    Args:
        y_true: (num_images,) 0/1 labels.
        scores: (num_images,) float scores.

    Returns:
        `float` in [0, 1], or NaN when `undefined_reason(y_true)` is not None.
    """
    from sklearn.metrics import average_precision_score

    y, s = _check_pair(y_true, scores)
    if undefined_reason(y):
        return math.nan
    return float(average_precision_score(y, s))


def sensitivity_at_specificity(y_true, scores, specificity=0.9):
    """Highest sensitivity among ROC operating points with specificity >= `specificity`.

    Uses sklearn's ROC curve (thresholds at the observed scores), so the point is
    achievable on this test set; no interpolation.

    Args:
        y_true: (num_images,) 0/1 labels.
        scores: (num_images,) float scores.
        specificity: target specificity in (0, 1).

    Returns:
        `(sensitivity, threshold)`: floats; both NaN when the class is undefined.
    """
    from sklearn.metrics import roc_curve

    if not 0.0 < specificity < 1.0:
        raise ValueError(f"`specificity` must be in (0, 1). Received: specificity={specificity}")
    y, s = _check_pair(y_true, scores)
    if undefined_reason(y):
        return math.nan, math.nan
    fpr, tpr, thresholds = roc_curve(y, s)
    ok = fpr <= 1.0 - specificity + 1e-12
    best = int(np.argmax(np.where(ok, tpr, -1.0)))
    threshold = float(thresholds[best])
    if not math.isfinite(threshold):  # sklearn's first point is +inf: nothing is called positive.
        threshold = float(np.max(s)) + 1.0
    return float(tpr[best]), threshold


def class_metrics(y_true, scores, specificity=0.9):
    """All point metrics for one class.

    Args:
        y_true: (num_images,) 0/1 labels.
        scores: (num_images,) float scores.
        specificity: specificity for the sensitivity operating point.

    Returns:
        dict with n, positives, auroc, auprc, sensitivity_at_spec, threshold_at_spec,
        prevalence and `undefined` (reason string or None).
    """
    y, s = _check_pair(y_true, scores)
    sens, thr = sensitivity_at_specificity(y, s, specificity)
    return {
        "n": int(y.size),
        "positives": int(y.sum()),
        "prevalence": float(y.mean()) if y.size else math.nan,
        "auroc": auroc(y, s),
        "auprc": auprc(y, s),
        "sensitivity_at_spec": sens,
        "threshold_at_spec": thr,
        "undefined": undefined_reason(y),
    }


def macro_mean(values):
    """Mean of the finite values in `values`; NaN when none is finite.

    The macro AUROC of the paper averages the defined per-class AUROCs; a class
    without positives is left out (and reported separately).
    """
    arr = np.asarray(list(values), dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    return float(finite.mean()) if finite.size else math.nan


def macro_mean_rows(values):
    """`macro_mean` of every row: (rows, classes) -> float64 (rows,), NaN values left out.

    The macro AUROC of each bootstrap resample: `values` holds the per-class AUROCs of
    the included classes, one resample per row (NaN where a class is undefined in that
    resample). A row with no finite value, or zero classes, gives NaN.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape[1] == 0:
        return np.full(arr.shape[0], math.nan)
    with warnings.catch_warnings():  # "Mean of empty slice" for rows where every class is undefined
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(arr, axis=1)


def macro_auroc(y_true, scores, names):
    """Per-class and macro AUROC of a multi-label problem, tolerant of undefined classes.

    Args:
        y_true: (num_images, classes) 0/1 labels.
        scores: (num_images, classes) float scores.
        names: the class names, for the reasons.

    Returns:
        (macro, per_class, reasons): `macro_mean` of the per-class AUROCs (NaN if none is defined), the list of
        per-class AUROCs (NaN when undefined), and ``{class name: reason}`` for each undefined class.
    """
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    per_class, reasons = [], {}
    for k, name in enumerate(names):
        reason = "non-finite predictions" if not np.all(np.isfinite(scores[:, k])) else undefined_reason(y_true[:, k])
        if reason:
            reasons[name] = reason
            per_class.append(math.nan)
        else:
            per_class.append(auroc(y_true[:, k], scores[:, k]))
    return macro_mean(per_class), per_class, reasons
