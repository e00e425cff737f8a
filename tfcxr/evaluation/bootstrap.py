"""Patient-level (cluster) bootstrap confidence intervals, vectorised over resamples.

One resample draws `num_patients` patients with replacement and keeps all the
images of every drawn patient. A patient drawn k times gives each of their
images weight k, so a resample is a weight matrix `(num_resamples, num_images)`
and AUROC / average precision become weighted sums over the images sorted by
score once: no Python loop over resamples, no re-sorting.
"""

import math

import numpy as np

# Upper bound on resamples x images held at once (float64 -> ~64 MB per array).
_CHUNK_ELEMENTS = 8_000_000


def patient_resample_counts(patient_ids, num_resamples=1000, seed=0):
    """Draw patient-level bootstrap resamples.

    Args:
        patient_ids: (num_images,) patient id per image (any hashable dtype).
        num_resamples: number of bootstrap resamples B.
        seed: seed of `np.random.default_rng`; the same seed gives the same resamples,
            so runs evaluated on the same images are resampled identically (paired).

    Returns:
        `(counts, image_patient)`: counts int32 (B, num_patients), how often each
        patient is drawn; image_patient int64 (num_images,), the patient column of each image.
    """
    if num_resamples < 1:
        raise ValueError(f"`num_resamples` must be >= 1. Received: num_resamples={num_resamples}")
    ids = np.asarray(patient_ids).astype(str)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"`patient_ids` must be a non-empty 1-D array. Received shape {ids.shape}")
    _, image_patient = np.unique(ids, return_inverse=True)
    num_patients = int(image_patient.max()) + 1
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num_patients, np.full(num_patients, 1.0 / num_patients), size=num_resamples)
    return counts.astype(np.int32), image_patient.astype(np.int64)


def _grouped(y, scores, weights):
    """Sort by ascending score, sum positive/negative weights per tied-score group.

    Returns pos, neg: float64 (B, num_groups), groups in ascending score order.
    """
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * y[order], starts, axis=1)
    neg = np.add.reduceat(w * (1 - y[order]), starts, axis=1)
    return pos, neg


def _auroc_from_groups(pos, neg):
    neg_below = np.cumsum(neg, axis=1) - neg
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sum(pos * (neg_below + 0.5 * neg), axis=1) / (total_pos * total_neg)
    out[(total_pos == 0) | (total_neg == 0)] = np.nan
    return out


def _average_precision_from_groups(pos, neg):
    pos, neg = pos[:, ::-1], neg[:, ::-1]  # descending thresholds
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    total_pos, total_neg = tp[:, -1], fp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
        out = np.sum(pos * precision, axis=1) / total_pos
    out[(total_pos == 0) | (total_neg == 0)] = np.nan
    return out


def _prepare(y_true, scores, weights):
    return (np.asarray(y_true, dtype=np.float64), np.asarray(scores, dtype=np.float64),
            np.asarray(weights, dtype=np.float64))


def weighted_auroc(y_true, scores, weights):
    """AUROC for many weightings of the same images at once (ties count 1/2).

    Args:
        y_true: (num_images,) 0/1 labels.
        scores: (num_images,) float scores.
        weights: (B, num_images) non-negative image weights.

    Returns:
        float64 (B,), NaN where a weighting has no positive or no negative weight.
    """
    return _auroc_from_groups(*_grouped(*_prepare(y_true, scores, weights)))


def weighted_average_precision(y_true, scores, weights):
    """Average precision (sklearn's step definition) for many weightings at once.

    Args:
        y_true: (num_images,) 0/1 labels.
        scores: (num_images,) float scores.
        weights: (B, num_images) non-negative image weights.

    Returns:
        float64 (B,), NaN where a weighting has no positive or no negative weight.
    """
    return _average_precision_from_groups(*_grouped(*_prepare(y_true, scores, weights)))


_METRICS = {"auroc": _auroc_from_groups, "auprc": _average_precision_from_groups}


def bootstrap_metrics(y_true, scores, counts, image_patient, metrics=("auroc", "auprc")):
    """Per-resample metric values for each column; one sort and grouping serves every metric.

    Args:
        y_true: (num_images, K) 0/1 labels.
        scores: (num_images, K) scores.
        counts, image_patient: from `patient_resample_counts`.
        metrics: names among "auroc", "auprc".

    Returns:
        dict metric -> float64 (B, K); NaN where a resample holds a single class for that column.
    """
    bad = [m for m in metrics if m not in _METRICS]
    if bad:
        raise ValueError(f"`metrics` must be among {tuple(_METRICS)}. Received: metrics={tuple(metrics)!r}")
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim == 1:
        y, s = y[:, None], s[:, None]
    if y.shape != s.shape or y.shape[0] != image_patient.shape[0]:
        raise ValueError(
            f"Shapes disagree: y_true {y.shape}, scores {s.shape}, image_patient {image_patient.shape}"
        )
    num_resamples = counts.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, y.shape[0]))
    out = {m: np.empty((num_resamples, y.shape[1]), dtype=np.float64) for m in metrics}
    for start in range(0, num_resamples, chunk):
        weights = counts[start : start + chunk][:, image_patient].astype(np.float64)  # (chunk, num_images)
        for k in range(y.shape[1]):
            pos, neg = _grouped(y[:, k], s[:, k], weights)
            for m in metrics:
                out[m][start : start + chunk, k] = _METRICS[m](pos, neg)
    return out


def percentile_ci(values, level=0.95):
    """Percentile confidence interval ignoring NaN resamples.

    Args:
        values: (B,) bootstrap values.
        level: coverage, e.g. 0.95.

    Returns:
        dict {"low", "high", "valid_resamples"}; low/high NaN when fewer than 2 are valid.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return {"low": math.nan, "high": math.nan, "valid_resamples": int(v.size)}
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(v, [tail, 100.0 - tail])
    return {"low": float(low), "high": float(high), "valid_resamples": int(v.size)}


def bootstrap_p(diffs):
    """Two-sided bootstrap p-value that the paired difference is 0, ignoring NaN resamples.

    Counts the resamples on the far side of 0 with the usual +1 correction, 2 (1 + k) / (B + 1), so the
    smallest p that B resamples can give is about 2 / B, never 0.

    Args:
        diffs: (B,) bootstrap values of a difference.

    Returns:
        float in (0, 1], NaN when no resample is valid.
    """
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan
    beyond = min(int(np.sum(d <= 0)), int(np.sum(d >= 0)))
    return float(min(1.0, 2.0 * (1 + beyond) / (d.size + 1)))


def seeds_and_patients_interval(per_seed, boot, level=0.95):
    """Interval for a difference averaged over training seeds, with the error of both the seeds and the patients.

    The seeds' runs share one test set, so the spread of their differences measures training variance (given that
    test set), and the patient bootstrap measures test-set variance (given those runs). The variance of the seed
    mean adds the two: s^2 / n (s: SD of the per-seed differences, ddof=1) plus the variance over the shared
    patient resamples of the seed-averaged difference; the seed-by-patient interaction enters both terms, so the
    sum is slightly conservative (by about the interaction over n). The interval is mean +- t(df) SE with
    Welch-Satterthwaite degrees of freedom (the bootstrap term taken as exact): between 1.96 SE each side (a
    dominant patient term, or many seeds) and t(n - 1) SE (a dominant seed term: 4.30 SE at 3 seeds).

    Args:
        per_seed: (n,) the runs' paired differences, one per seed.
        boot: (n, B) the same differences on the shared patient resamples; NaN where undefined.
        level: coverage, e.g. 0.95.

    Returns:
        dict {"mean", "se", "se_seeds", "se_patients", "df", "ci": [low, high], "p"}; NaN (but "mean") when
        fewer than 2 seeds or no valid resample; "ci" and "p" NaN when se is 0. df is inf when the seed term is 0
        (metrics.json writes it, like NaN, as null).
    """
    from scipy import stats

    d = np.asarray(per_seed, dtype=np.float64)
    b = np.asarray(boot, dtype=np.float64)
    if b.ndim != 2 or b.shape[0] != d.shape[0]:
        raise ValueError(f"`boot` must be (seeds, resamples) for {d.shape[0]} seeds. Received shape {b.shape}")
    keep = np.isfinite(d)
    d, b = d[keep], b[keep]
    out = {"mean": float(d.mean()) if d.size else math.nan, "se": math.nan, "se_seeds": math.nan,
           "se_patients": math.nan, "df": math.nan, "ci": [math.nan, math.nan], "p": math.nan}
    valid = b[:, np.all(np.isfinite(b), axis=0)]
    if d.size < 2 or valid.shape[1] < 2:
        return out
    var_seeds = float(d.var(ddof=1)) / d.size
    var_patients = float(valid.mean(axis=0).var(ddof=1))
    var = var_seeds + var_patients
    df = math.inf if var_seeds == 0 else var**2 / (var_seeds**2 / (d.size - 1))
    out.update(se=math.sqrt(var), se_seeds=math.sqrt(var_seeds), se_patients=math.sqrt(var_patients), df=df)
    if var == 0:
        return out
    half = float(stats.t.ppf(0.5 + level / 2.0, df)) * out["se"]
    out["ci"] = [out["mean"] - half, out["mean"] + half]
    out["p"] = float(2.0 * stats.t.sf(abs(out["mean"]) / out["se"], df))
    return out
