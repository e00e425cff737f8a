"""The held-out evaluation of a segmenter preset (step 6 of :mod:`tfcxr.segment.build_preset`): per test set and
prompt, Dice and HD95 summaries with seeded bootstrap 95% CIs, QC flag recall, and the mask path's speed.
"""

from __future__ import annotations

import time

import numpy as np

from .prompts import PROMPTS


def bootstrap_summary(values, resamples: int, seed: int) -> dict:
    """Mean, minimum and a seeded percentile-bootstrap 95% CI of the mean of finite `values`."""
    from tfcxr.evaluation.bootstrap import percentile_ci

    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"n": int(values.size), "mean": None, "min": None, "max": None, "ci95": [None, None]}
    draws = np.random.default_rng(seed).integers(0, finite.size, (resamples, finite.size))
    ci = percentile_ci(finite[draws].mean(axis=1))
    return {"n": int(values.size), "finite": int(finite.size), "mean": float(finite.mean()),
            "min": float(finite.min()), "max": float(finite.max()), "ci95": [ci["low"], ci["high"]]}


def evaluate_tests(model, tests: dict, config, cache, with_flags: bool) -> dict:
    """Per test set and prompt: Dice and HD95 summaries (with CIs), per-image rows, and QC flag recall.

    Args:
        model: a ``SamLungModel``, run with its own inference settings and every prompt of ``PROMPTS``.
        tests: {test set name: pairs spec (folder or CSV manifest)}.
        config: the ``PresetConfig`` (``batch_size``, ``bootstrap_resamples``, ``seed``, ``flag_dice``).
        cache: embedding cache folder.
        with_flags: also compute QC flags per image and how many images below ``flag_dice`` carry one.
    """
    from tfcxr.data.pairs import load_pairs

    return {name: score_pairs(model, load_pairs(spec), config, cache, with_flags) for name, spec in tests.items()}


def score_pairs(model, pairs, config, cache, with_flags: bool) -> dict:
    """``{prompt: summary}`` of :func:`summarise` for `pairs` (see :func:`evaluate_tests`)."""
    from . import qc
    from .evaluate import evaluate

    results = evaluate(model, pairs, PROMPTS, model.inference, config.batch_size, cache, keep_masks=with_flags)
    report = {}
    for prompt, result in results.items():
        rows = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
                for r in result["per_image"]]
        flagged = with_flags and prompt != "gt"
        if flagged:
            for row, pair, mask, stability in zip(rows, pairs, result["masks"], result["stability"]):
                stats = qc.mask_stats(mask, pair.image, stability=stability)
                row.update(flags=stats["flags"], stability=stats["stability"])
        report[prompt] = summarise(rows, config, flagged)
    return report


def summarise(rows, config, with_flags: bool) -> dict:
    """Dice and HD95 summaries (:func:`bootstrap_summary`) of per-image `rows` (``dice``, ``hd95``, and ``flags``
    when `with_flags`), the rows themselves and, with flags, how many images below ``config.flag_dice`` carry one."""
    def values(key):
        return [np.nan if r[key] is None else r[key] for r in rows]

    entry = {"dice": bootstrap_summary(values("dice"), config.bootstrap_resamples, config.seed),
             "hd95": bootstrap_summary(values("hd95"), config.bootstrap_resamples, config.seed),
             "per_image": list(rows)}
    if with_flags:
        failures = [r for r in rows if r["dice"] is not None and r["dice"] < config.flag_dice]
        entry["below_flag_dice"] = len(failures)
        entry["below_flag_dice_flagged"] = sum(bool(r["flags"]) for r in failures)
        entry["flagged"] = sum(bool(r["flags"]) for r in rows)
    return entry


def evaluate_preset(packaged, config, tests: dict, cache) -> dict:
    """Step 6: ``{"preset": report, "baseline": report}`` of :func:`evaluate_tests` (QC flags for the preset only)."""
    from .loading import load_segmenter

    report = {"preset": evaluate_tests(packaged, tests, config, cache, with_flags=True)}
    baseline = load_segmenter(config.baseline)
    report["baseline"] = evaluate_tests(baseline, tests, config, cache, with_flags=False)
    return report


def images_per_second(model, pairs, batch_size: int) -> float:
    """Images/s of the full mask path (embedding included, no cache) on up to 16 images."""
    from .eager_masks import segment_lungs

    images = [p.image for p in pairs[:16]]
    segment_lungs(model, images[:batch_size], batch_size=batch_size)  # trace
    start = time.time()
    segment_lungs(model, images, batch_size=batch_size)
    return len(images) / (time.time() - start)
