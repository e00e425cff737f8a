"""Compute the evaluation of one or more runs and write the report folder (docs/architecture.md).

REPORTDIR/
    metrics.json            every number below; NaN is written as null with a reason
    report.md               tables: mask-mode comparison (AUROC + 95% CI), the shortcut probe
                            (inverse vs original vs tight), seed variance per cell and cell
                            comparisons over seeds, AUPRC, sensitivity at 90% specificity,
                            DeLong p-values, training efficiency
    roc_<run>.png           ROC curves of every class of one run
    roc_overlay.png         one panel per class, all runs overlaid
    mask_mode_comparison.png  AUROC bars: one per run (95% CI whiskers), or per cell over seeds (seed range)
    mask_overlay_grid.png   a few test images: lung mask contour and each masking mode
    gradcam.png             Grad-CAM of each run (columns) on the same test images (rows)

This module computes the metrics dict; `report_markdown` renders report.md from it and
`figures` draws the PNGs.
"""

import itertools
import json
import logging
import math
import pathlib
import warnings

import numpy as np

from tfcxr.evaluation import bootstrap, delong, metrics
from tfcxr.evaluation.columns import COLUMNS, MACRO, no_finding_scores
from tfcxr.evaluation.figures import report_figures
from tfcxr.evaluation.report_markdown import fmt as _fmt  # noqa: F401  tfcxr.evaluate imports _fmt from here
from tfcxr.evaluation.report_markdown import markdown
from tfcxr.evaluation.runs import check_same_test_images, differing_settings, group_cells, run_seed
from tfcxr.labels import NO_FINDING, TARGETS
from tfcxr.rundir import best_of

logger = logging.getLogger(__name__)

# The shortcut probe compares these mask modes of one backbone (whichever exist).
PROBE_MODES = ("inverse", "original", "tight")
PROBE_SENTENCE = (
    "A high `inverse` AUROC (lungs removed from the image) means the classifier can use signal outside the lungs "
    "(devices, markers, body habitus) rather than the lung findings themselves; measuring that is the point of "
    "*Mask of truth: model sensitivity to unexpected regions of medical images*."
)


def _evaluate_one(run, num_resamples, seed, level, specificity, method):
    y = run.labels()  # (N, 5)
    p = run.probabilities()  # (N, 5)
    y_nf = run.no_finding_labels()  # (N,)
    s_nf = no_finding_scores(p, method)  # (N,)
    y_all = np.concatenate([y, y_nf[:, None]], axis=1)  # (N, 6)
    s_all = np.concatenate([p, s_nf[:, None]], axis=1)  # (N, 6)
    counts, image_patient = bootstrap.patient_resample_counts(run.predictions["patient_id"], num_resamples, seed)
    boot = bootstrap.bootstrap_metrics(y_all, s_all, counts, image_patient)  # metric -> (B, 6)

    classes = {}
    for k, name in enumerate(COLUMNS):
        entry = metrics.class_metrics(y_all[:, k], s_all[:, k], specificity)
        for m in ("auroc", "auprc"):
            ci = bootstrap.percentile_ci(boot[m][:, k], level) if entry["undefined"] is None else {
                "low": math.nan, "high": math.nan, "valid_resamples": 0}
            entry[f"{m}_ci"] = [ci["low"], ci["high"]]
            entry[f"{m}_valid_resamples"] = ci["valid_resamples"]
        classes[name] = entry
    included = [t for t in TARGETS if classes[t]["undefined"] is None]
    cols = [TARGETS.index(t) for t in included]
    macro = {"classes_included": included,
             "classes_excluded": {t: classes[t]["undefined"] for t in TARGETS if t not in included}}
    macro_boot = {}
    for m in ("auroc", "auprc"):
        macro[m] = metrics.macro_mean(classes[t][m] for t in included)
        macro_boot[m] = metrics.macro_mean_rows(boot[m][:, cols])  # (B,)
        ci = bootstrap.percentile_ci(macro_boot[m], level)
        macro[f"{m}_ci"] = [ci["low"], ci["high"]]
        macro[f"{m}_valid_resamples"] = ci["valid_resamples"]

    efficiency = dict(run.efficiency or {})
    best = best_of(run.history)
    efficiency.update(column=best.column, best_val_auroc=best.value, epochs_to_best=best.epoch)
    result = {
        "name": run.name,
        "label": run.label,
        "run_dir": str(run.run_dir),
        "backbone": run.backbone,
        "mask": run.mask,
        "margin": run.config.get("margin"),
        "image_size": run.config.get("image_size"),
        "n_images": int(len(run.predictions)),
        "n_patients": int(run.predictions["patient_id"].nunique()),
        "no_finding_score": method,
        "classes": classes,
        MACRO: macro,
        "efficiency": efficiency,
    }
    return result, macro_boot["auroc"]


def evaluate_runs(runs, num_resamples=1000, seed=0, ci_level=0.95, specificity=0.9,
                  no_finding_score=None, require_same_test_set=True, linked=()):
    """All metrics of the report as one JSON-ready dict.

    Args:
        runs: list of `tfcxr.evaluation.runs.Run`.
        num_resamples: patient-level bootstrap resamples (same seed for every run, so
            runs on the same test set share resamples and their differences are paired).
        seed: bootstrap seed.
        ci_level: confidence level of the percentile intervals.
        specificity: operating point for sensitivity.
        no_finding_score: "max" or "prod" for every run; None takes each run's config
            `no_finding_score` (`Run.no_finding_score`, "max" for older runs).
        require_same_test_set: raise when two runs differ in test images; False skips
            the comparisons of those pairs instead (with a note).
        linked: groups of config keys that count as one setting when cells are compared (cells are compared
            when they differ in at most one setting), e.g. the fields of an experiment's `variant` axis.

    Returns:
        dict with "settings", "runs" (one entry per run) and "comparisons" (one per pair).
    """
    from tfcxr.scoring import NO_FINDING_METHODS

    if not runs:
        raise ValueError("No runs to evaluate")
    results, macro_boots = [], []
    for run in runs:
        method = no_finding_score or run.no_finding_score
        if method not in NO_FINDING_METHODS:
            raise ValueError(f"`no_finding_score` must be one of {NO_FINDING_METHODS}. Received: {method!r}")
        logger.info("Evaluating %s (%s): %d test images", run.name, run.label, len(run.predictions))
        result, macro_boot = _evaluate_one(run, num_resamples, seed, ci_level, specificity, method)
        results.append(result)
        macro_boots.append(macro_boot)

    cells = group_cells(runs)
    index = {id(run): k for k, run in enumerate(runs)}
    comparable = _comparable_cells(cells, linked)
    comparisons, by_pair = [], {}
    for i, j in _run_pairs(runs, cells, index, comparable):
        entry = _compare(runs[i], runs[j], results[i], results[j], macro_boots[i], macro_boots[j], ci_level,
                         require_same_test_set)
        comparisons.append(entry)
        by_pair[(i, j)] = entry
    cell_results = [_cell_summary(cell, [results[index[id(r)]] for r in cell.runs]) for cell in cells]
    cell_comparisons = []
    for ca, cb, differs_in in comparable:
        entry = _compare_cells(ca, cb, differs_in, results, index, by_pair, macro_boots, ci_level)
        if entry is not None:
            cell_comparisons.append(entry)
    return {"settings": _settings(num_resamples, seed, ci_level, specificity), "runs": results,
            "comparisons": comparisons, "cells": cell_results, "cell_comparisons": cell_comparisons,
            "shortcut_probe": _shortcut_probe(cells, cell_results, cell_comparisons)}


def _comparable_cells(cells, linked):
    """(cell_a, cell_b, the settings they differ in) for every pair of cells that differ in at most one setting
    (`linked` groups of keys count as one, see `differing_settings`)."""
    pairs = ((ca, cb, differing_settings(ca, cb, linked)) for ca, cb in itertools.combinations(cells, 2))
    return [(ca, cb, differs_in) for ca, cb, differs_in in pairs if len(differs_in) <= 1]


def _run_pairs(runs, cells, index, comparable):
    """Index pairs of the runs to compare: with several seeds, same-seed runs of the `comparable` cell pairs
    (`_comparable_cells`); otherwise every pair of runs, as for a single-seed grid."""
    if any(len(cell.runs) > 1 for cell in cells):
        return [(index[id(ra)], index[id(rb)])
                for ca, cb, _ in comparable
                for ra in ca.runs for rb in cb.runs if run_seed(ra) == run_seed(rb)]
    return list(itertools.combinations(range(len(runs)), 2))


def _settings(num_resamples, seed, ci_level, specificity):
    """The "settings" entry of the metrics: how every number was computed."""
    return {
        "targets": list(TARGETS),
        "bootstrap": {"unit": "patient", "num_resamples": num_resamples, "seed": seed, "ci_level": ci_level,
                      "interval": "percentile"},
        "specificity": specificity,
        "macro": "mean AUROC over the targets with positives and negatives in the test set",
        "delong": "fast DeLong (Sun & Xu 2014), clustered by patient (Obuchowski 1997), two-sided, paired on "
                  "image_id",
        "seeds": "cells group runs whose configs differ only in the training seed; SD with ddof=1; over seeds: "
                 "paired t-test and Wilcoxon signed-rank test of the per-seed AUROC differences, and a t interval "
                 "(Welch-Satterthwaite df) whose variance adds the seed term s^2/n to the patient-bootstrap "
                 "variance of the seed-averaged difference",
    }


def _compare(a, b, result_a, result_b, boot_a, boot_b, ci_level, require_same_test_set):
    """Paired comparison of two runs on the same test images: DeLong per column, bootstrap macro difference."""
    try:
        check_same_test_images(a, b)
    except ValueError as err:
        if require_same_test_set:
            raise
        return {"run_a": a.name, "run_b": b.name, "skipped": str(err)}
    scores_a = np.concatenate([a.probabilities(), no_finding_scores(a.probabilities(), result_a["no_finding_score"])[:, None]], 1)
    scores_b = np.concatenate([b.probabilities(), no_finding_scores(b.probabilities(), result_b["no_finding_score"])[:, None]], 1)
    y_all = np.concatenate([a.labels(), a.no_finding_labels()[:, None]], 1)
    patients = a.predictions["patient_id"].to_numpy()
    tests = {name: delong.delong_test(y_all[:, k], scores_a[:, k], scores_b[:, k], patients)
             for k, name in enumerate(COLUMNS)}
    diff = boot_a - boot_b
    ci = bootstrap.percentile_ci(diff, ci_level)
    return {
        "run_a": a.name, "run_b": b.name, "label_a": a.label, "label_b": b.label,
        "n_images": int(len(a.predictions)),
        "delong": tests,
        "macro_auroc_diff": result_a[MACRO]["auroc"] - result_b[MACRO]["auroc"],
        "macro_auroc_diff_ci": [ci["low"], ci["high"]],
        "macro_auroc_diff_bootstrap_p": bootstrap.bootstrap_p(diff),
    }


def _spread(values):
    """mean, SD (ddof=1; NaN for one value), min, max and the values, ignoring NaN."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan, "n": 0, "values": list(values)}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size), "values": list(values)}


def _cell_summary(cell, results):
    """Per-seed AUROCs (with their CIs) and their mean, SD and range for one cell."""
    per_seed = [{"seed": run_seed(run), "run": r["name"], "macro_auroc": r[MACRO]["auroc"],
                 "macro_auroc_ci": r[MACRO]["auroc_ci"], "no_finding_auroc": r["classes"][NO_FINDING]["auroc"],
                 "no_finding_auroc_ci": r["classes"][NO_FINDING]["auroc_ci"]} for run, r in zip(cell.runs, results)]
    return {
        "label": cell.label,
        "backbone": str(cell.config.get("backbone", "?")),
        "mask": str(cell.config.get("mask", "?")),
        "runs": [r["name"] for r in results],
        "seeds": cell.seeds,
        "per_seed": per_seed,
        "macro_auroc": _spread([e["macro_auroc"] for e in per_seed]),
        # Each run's best validation macro AUROC (the epoch it keeps): what to choose settings on, not the test.
        "best_val_auroc": _spread([r["efficiency"].get("best_val_auroc") for r in results]),
        "no_finding_auroc": _spread([e["no_finding_auroc"] for e in per_seed]),
        "classes": {t: _spread([r["classes"][t]["auroc"] for r in results]) for t in TARGETS},
    }


def _over_seeds(diffs):
    """Tests of per-seed paired differences: one-sample t-test and Wilcoxon signed-rank (two-sided)."""
    from scipy import stats

    d = np.asarray([x for x in diffs if x is not None and math.isfinite(x)], dtype=np.float64)
    out = {"n": int(d.size), **{k: v for k, v in _spread(d.tolist()).items() if k != "values"},
           "t_test_p": math.nan, "wilcoxon_p": math.nan}
    if d.size >= 2 and np.std(d) > 0:
        out["t_test_p"] = float(stats.ttest_1samp(d, 0.0).pvalue)
    if d.size >= 2 and np.any(d != 0):
        with warnings.catch_warnings():  # small-sample notes
            warnings.simplefilter("ignore")
            out["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue)
    return out


def _compare_cells(cell_a, cell_b, differs_in, results, index, by_pair, macro_boots, ci_level):
    """Compare two cells (differing in the settings `differs_in`) over their shared seeds (None when they share
    none or their test sets differ)."""
    seeds_b = {run_seed(r): r for r in cell_b.runs}
    pairs = [(ra, seeds_b[run_seed(ra)]) for ra in cell_a.runs if run_seed(ra) in seeds_b]
    if not pairs:
        return None
    entries = [by_pair.get((index[id(ra)], index[id(rb)])) for ra, rb in pairs]
    if any(e is None or "skipped" in e for e in entries):
        return None
    res = [(results[index[id(ra)]], results[index[id(rb)]]) for ra, rb in pairs]
    macro = [a[MACRO]["auroc"] - b[MACRO]["auroc"] for a, b in res]
    no_finding = [a["classes"][NO_FINDING]["auroc"] - b["classes"][NO_FINDING]["auroc"] for a, b in res]
    # Seed and patient error of the seed mean: the per-seed spread plus the shared patient resamples.
    diffs = np.stack([macro_boots[index[id(ra)]] - macro_boots[index[id(rb)]] for ra, rb in pairs])  # (seeds, B)
    return {
        "cell_a": cell_a.label, "cell_b": cell_b.label, "differs_in": differs_in,
        "seeds": [run_seed(ra) for ra, _ in pairs],
        "macro_auroc_diff": _over_seeds(macro),
        "macro_auroc_diff_seeds_patients": bootstrap.seeds_and_patients_interval(macro, diffs, ci_level),
        "no_finding_auroc_diff": _over_seeds(no_finding),
        "per_seed": [{"seed": run_seed(ra), "macro_auroc_diff": m, "macro_bootstrap_p": e["macro_auroc_diff_bootstrap_p"],
                      "delong_p": {name: e["delong"][name]["p_value"] for name in COLUMNS}}
                     for (ra, _), m, e in zip(pairs, macro, entries)],
    }


def _shortcut_probe(cells, cell_results, cell_comparisons):
    """Inverse vs original vs tight per backbone (and per other setting), from the cell results and comparisons."""
    contexts = {}
    for cell, summary in zip(cells, cell_results):
        mode = str(cell.config.get("mask"))
        if mode not in PROBE_MODES:
            continue
        context = summary["label"].replace(f" / {mode}", "", 1)
        contexts.setdefault(context, {})[mode] = summary
    probe = []
    for context, modes in contexts.items():
        if "inverse" not in modes and len(modes) < 2:
            continue
        ordered = [m for m in PROBE_MODES if m in modes]
        labels = {modes[m]["label"]: m for m in ordered}
        tests = []
        for c in cell_comparisons:
            if c["cell_a"] in labels and c["cell_b"] in labels:
                tests.append({"mode_a": labels[c["cell_a"]], "mode_b": labels[c["cell_b"]], **c})
        entry = {"context": context, "modes": ordered,
                 "auroc": {m: {"macro": modes[m]["macro_auroc"], "no_finding": modes[m]["no_finding_auroc"],
                               "classes": modes[m]["classes"], "per_seed": modes[m]["per_seed"]} for m in ordered},
                 "tests": tests, "interpretation": PROBE_SENTENCE}
        if "inverse" in modes and "original" in modes:
            inv, orig = modes["inverse"]["macro_auroc"]["mean"], modes["original"]["macro_auroc"]["mean"]
            entry["inverse_share_of_original_margin"] = (inv - 0.5) / (orig - 0.5) if orig - 0.5 > 0 else math.nan
        probe.append(entry)
    return probe


def _json_ready(obj):
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, pathlib.Path):
        return str(obj)
    return obj


def write_report(runs, out_dir, num_resamples=1000, seed=0, ci_level=0.95, specificity=0.9,
                 no_finding_score=None, require_same_test_set=True, gradcam_images=4,
                 title="tfcxr evaluation report", linked=()):
    """Evaluate `runs` and write the report folder.

    Args:
        runs: list of `Run` (see `tfcxr.evaluation.runs.load_runs`).
        out_dir: report folder (created).
        gradcam_images: test images in the mask grid and Grad-CAM grid; 0 skips both
            (and model loading).
        Others: see `evaluate_runs`.

    Returns:
        the metrics dict written to metrics.json.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = evaluate_runs(runs, num_resamples, seed, ci_level, specificity, no_finding_score,
                           require_same_test_set, linked)
    notes = []
    figures = report_figures(runs, result, out_dir, gradcam_images, notes)
    result["figures"] = {caption: path.name for caption, path in figures}
    result["notes"] = notes
    with open(out_dir / "metrics.json", "w", encoding="utf-8") as f:
        json.dump(_json_ready(result), f, indent=2, allow_nan=False)
    (out_dir / "report.md").write_text(markdown(result, figures, notes, title), encoding="utf-8")
    logger.info("Wrote %s", out_dir / "report.md")
    return result
