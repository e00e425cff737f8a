"""Compute the evaluation of one or more runs and write the report folder (docs/architecture.md).

REPORTDIR/
    metrics.json            every number below; NaN is written as null with a reason
    report.md               tables: mask-mode comparison (AUROC + 95% CI), the shortcut probe
                            (inverse vs original vs tight), seed variance per cell and cell
                            comparisons over seeds, AUPRC, sensitivity at 90% specificity,
                            DeLong p-values, training efficiency
    roc_<run>.png           ROC curves of every class of one run
    roc_overlay.png         one panel per class, all runs overlaid
    mask_mode_comparison.png  AUROC bars with CI whiskers, one bar per run
    mask_overlay_grid.png   a few test images: lung mask contour and each masking mode
    gradcam.png             Grad-CAM of each run (columns) on the same test images (rows)
"""

import itertools
import json
import logging
import math
import pathlib
import warnings

import numpy as np

from tfcxr.evaluation import bootstrap, delong, metrics, plots
from tfcxr.evaluation.runs import check_same_test_images, differing_keys, group_cells, run_seed
from tfcxr.labels import NO_FINDING, TARGETS
from tfcxr.rundir import best_of

logger = logging.getLogger(__name__)

MACRO = "macro"
COLUMNS = TARGETS + (NO_FINDING,)  # bootstrap columns: the 5 targets, then No Finding
# The shortcut probe compares these mask modes of one backbone (whichever exist).
PROBE_MODES = ("inverse", "original", "tight")
PROBE_SENTENCE = (
    "A high `inverse` AUROC (lungs removed from the image) means the classifier can use signal outside the lungs "
    "(devices, markers, body habitus) rather than the lung findings themselves; measuring that is the point of "
    "*Mask of truth: model sensitivity to unexpected regions of medical images*."
)


def _no_finding_scores(probs, method):
    from tfcxr.scoring import no_finding_score

    return np.asarray(no_finding_score(probs.astype(np.float32), method), dtype=np.float64)


def _p_two_sided(diffs):
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan
    return float(min(1.0, 2.0 * min(np.mean(d <= 0), np.mean(d >= 0))))


def _evaluate_one(run, num_resamples, seed, level, specificity, method):
    y = run.labels()  # (N, 5)
    p = run.probabilities()  # (N, 5)
    y_nf = run.no_finding_labels()  # (N,)
    s_nf = _no_finding_scores(p, method)  # (N,)
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
                  no_finding_score=None, require_same_test_set=True):
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
    multi_seed = any(len(cell.runs) > 1 for cell in cells)
    if multi_seed:  # same-seed pairs of cells that differ in one setting
        pairs = [(index[id(ra)], index[id(rb)])
                 for ca, cb in itertools.combinations(cells, 2) if len(differing_keys(ca, cb)) <= 1
                 for ra in ca.runs for rb in cb.runs if run_seed(ra) == run_seed(rb)]
    else:  # every pair of runs, as for a single-seed grid
        pairs = list(itertools.combinations(range(len(runs)), 2))
    comparisons, by_pair = [], {}
    for i, j in pairs:
        entry = _compare(runs[i], runs[j], results[i], results[j], macro_boots[i], macro_boots[j], ci_level,
                         require_same_test_set)
        comparisons.append(entry)
        by_pair[(i, j)] = entry
    cell_results = [_cell_summary(cell, [results[index[id(r)]] for r in cell.runs]) for cell in cells]
    cell_comparisons = []
    for (a, ca), (b, cb) in itertools.combinations(enumerate(cells), 2):
        if len(differing_keys(ca, cb)) > 1:
            continue
        entry = _compare_cells(ca, cb, results, index, by_pair, macro_boots, ci_level, seed)
        if entry is not None:
            cell_comparisons.append(entry)
    settings = {
        "targets": list(TARGETS),
        "bootstrap": {"unit": "patient", "num_resamples": num_resamples, "seed": seed, "ci_level": ci_level,
                      "interval": "percentile"},
        "specificity": specificity,
        "macro": "mean AUROC over the targets with positives and negatives in the test set",
        "delong": "fast DeLong (Sun & Xu 2014), two-sided, paired on image_id",
        "seeds": "cells group runs whose configs differ only in the training seed; SD with ddof=1; over seeds: "
                 "paired t-test and Wilcoxon signed-rank test of the per-seed AUROC differences, and a bootstrap "
                 "that resamples patients (shared resamples) and seeds",
    }
    return {"settings": settings, "runs": results, "comparisons": comparisons, "cells": cell_results,
            "cell_comparisons": cell_comparisons, "shortcut_probe": _shortcut_probe(cells, cell_results,
                                                                                  cell_comparisons)}


def _compare(a, b, result_a, result_b, boot_a, boot_b, ci_level, require_same_test_set):
    """Paired comparison of two runs on the same test images: DeLong per column, bootstrap macro difference."""
    try:
        check_same_test_images(a, b)
    except ValueError as err:
        if require_same_test_set:
            raise
        return {"run_a": a.name, "run_b": b.name, "skipped": str(err)}
    scores_a = np.concatenate([a.probabilities(), _no_finding_scores(a.probabilities(), result_a["no_finding_score"])[:, None]], 1)
    scores_b = np.concatenate([b.probabilities(), _no_finding_scores(b.probabilities(), result_b["no_finding_score"])[:, None]], 1)
    y_all = np.concatenate([a.labels(), a.no_finding_labels()[:, None]], 1)
    tests = {name: delong.delong_test(y_all[:, k], scores_a[:, k], scores_b[:, k]) for k, name in enumerate(COLUMNS)}
    diff = boot_a - boot_b
    ci = bootstrap.percentile_ci(diff, ci_level)
    return {
        "run_a": a.name, "run_b": b.name, "label_a": a.label, "label_b": b.label,
        "n_images": int(len(a.predictions)),
        "delong": tests,
        "macro_auroc_diff": result_a[MACRO]["auroc"] - result_b[MACRO]["auroc"],
        "macro_auroc_diff_ci": [ci["low"], ci["high"]],
        "macro_auroc_diff_bootstrap_p": _p_two_sided(diff),
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


def _compare_cells(cell_a, cell_b, results, index, by_pair, macro_boots, ci_level, seed):
    """Compare two cells over their shared seeds (None when they share none or their test sets differ)."""
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
    # Bootstrap over patients and seeds: each resample draws patients (the shared resample b) and seeds.
    diffs = np.stack([macro_boots[index[id(ra)]] - macro_boots[index[id(rb)]] for ra, rb in pairs])  # (seeds, B)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(pairs), size=(diffs.shape[1], len(pairs)))  # (B, seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        both = np.nanmean(diffs[drawn, np.arange(diffs.shape[1])[:, None]], axis=1)  # (B,)
    ci = bootstrap.percentile_ci(both, ci_level)
    return {
        "cell_a": cell_a.label, "cell_b": cell_b.label, "differs_in": differing_keys(cell_a, cell_b),
        "seeds": [run_seed(ra) for ra, _ in pairs],
        "macro_auroc_diff": _over_seeds(macro),
        "macro_auroc_diff_patients_seeds_ci": [ci["low"], ci["high"]],
        "macro_auroc_diff_patients_seeds_p": _p_two_sided(both),
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


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _fmt_ci(entry, metric="auroc"):
    value = entry[metric]
    if value is None or not math.isfinite(value):
        return "n/a"
    low, high = entry[f"{metric}_ci"]
    return f"{value:.3f} ({_fmt(low)}-{_fmt(high)})"


def _fmt_p(p):
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _safe_name(name):
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _markdown(result, figures, notes, title):
    settings = result["settings"]
    boot = settings["bootstrap"]
    lines = [f"# {title}", ""]
    runs = result["runs"]
    first = runs[0]
    pos = ", ".join(f"{name} {first['classes'][name]['positives']}" for name in COLUMNS)
    lines += [
        f"Test set of `{first['name']}`: {first['n_images']} images, {first['n_patients']} patients; "
        f"positives: {pos}.",
        f"95% CIs: patient-level bootstrap ({boot['num_resamples']} resamples, seed {boot['seed']}, "
        f"percentile). Macro = mean AUROC over the targets defined in the test set. "
        f"No Finding score = 1 - max_k p_k (`max`) or prod_k (1 - p_k) (`prod`), against NIH's No Finding label.",
        "",
        "## Mask-mode comparison: AUROC (95% CI)",
        "",
        "| run (backbone / mask) | test images (patients) | " + " | ".join(TARGETS) + " | macro | No Finding |",
        "|---" * (len(TARGETS) + 4) + "|",
    ]
    for r in runs:
        cells = [_fmt_ci(r["classes"][t]) for t in TARGETS] + [_fmt_ci(r[MACRO]), _fmt_ci(r["classes"][NO_FINDING])]
        lines.append(f"| {r['label']} | {r['n_images']} ({r['n_patients']}) | " + " | ".join(cells) + " |")
    lines += _probe_markdown(result.get("shortcut_probe") or [])
    lines += _seed_markdown(result.get("cells") or [], result.get("cell_comparisons") or [])
    lines += ["", "## AUPRC (95% CI)", "",
              "| run | " + " | ".join(TARGETS) + " | macro | No Finding |", "|---" * (len(TARGETS) + 3) + "|"]
    for r in runs:
        cells = [_fmt_ci(r["classes"][t], "auprc") for t in TARGETS]
        cells += [_fmt_ci(r[MACRO], "auprc"), _fmt_ci(r["classes"][NO_FINDING], "auprc")]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    spec = settings["specificity"]
    lines += ["", f"## Sensitivity at {spec:.0%} specificity", "",
              "| run | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for r in runs:
        lines.append(f"| {r['label']} | " + " | ".join(_fmt(r["classes"][c]["sensitivity_at_spec"]) for c in COLUMNS) + " |")

    comparisons = result["comparisons"]
    if comparisons:
        lines += ["", "## Paired comparisons (DeLong p-values; macro: paired bootstrap)", "",
                  "| run A | run B | " + " | ".join(COLUMNS) + " | macro diff A-B (95% CI) | macro p |",
                  "|---" * (len(COLUMNS) + 4) + "|"]
        for c in comparisons:
            if "skipped" in c:
                lines.append(f"| {c['run_a']} | {c['run_b']} | skipped: {c['skipped']} |")
                continue
            ps = [_fmt_p(c["delong"][name]["p_value"]) for name in COLUMNS]
            low, high = c["macro_auroc_diff_ci"]
            lines.append(f"| {c['label_a']} | {c['label_b']} | " + " | ".join(ps)
                         + f" | {_fmt(c['macro_auroc_diff'])} ({_fmt(low)} to {_fmt(high)}) | "
                         + f"{_fmt_p(c['macro_auroc_diff_bootstrap_p'])} |")
        lines.append("")
        lines.append(f"{len(comparisons)} pairwise comparisons, not corrected for multiple testing.")

    lines += ["", "## Training efficiency", "",
              "| run | device | precision | s/epoch | train img/s | epochs run | epochs to best val AUROC | best val AUROC |",
              "|---" * 8 + "|"]
    for r in runs:
        e = r["efficiency"]
        lines.append(
            f"| {r['label']} | {e.get('device', 'n/a')} | {e.get('precision', 'n/a')} | "
            f"{_fmt(e.get('seconds_per_epoch'), 1)} | {_fmt(e.get('train_images_per_second'), 1)} | "
            f"{e.get('epochs_run', 'n/a')} | {e.get('epochs_to_best') or 'n/a'} | {_fmt(e.get('best_val_auroc'))} |")

    undefined = [(r["label"], name, r["classes"][name]["undefined"]) for r in runs for name in COLUMNS
                 if r["classes"][name]["undefined"]]
    if undefined or notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {label}: {name} AUROC undefined: {reason}." for label, name, reason in undefined]
        lines += [f"- {note}" for note in notes]
    if figures:
        lines += ["", "## Figures", ""]
        for caption, path in figures:
            lines += [f"**{caption}**", "", f"![{caption}]({path.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _fmt_spread(spread):
    if not spread or spread.get("n", 0) == 0:
        return "n/a"
    if spread["n"] == 1:
        return _fmt(spread["mean"])
    return f"{spread['mean']:.3f} ± {_fmt(spread['sd'])} ({spread['min']:.3f} to {spread['max']:.3f})"


def _fmt_seed_values(per_seed, key):
    return "; ".join(f"s{e['seed']}: {_fmt_ci({'auroc': e[key], 'auroc_ci': e[key + '_ci']})}" for e in per_seed)


def _probe_markdown(probe):
    """The shortcut-probe section: AUROC of inverse / original / tight per backbone, their paired tests."""
    if not probe:
        return []
    lines = ["", "## Shortcut probe: inverse vs original vs tight", "", PROBE_SENTENCE, ""]
    for entry in probe:
        lines += [f"### {entry['context']}", "",
                  "| mask | seeds | " + " | ".join(TARGETS) + " | macro | No Finding |",
                  "|---" * (len(TARGETS) + 4) + "|"]
        for mode in entry["modes"]:
            auroc = entry["auroc"][mode]
            per_seed = auroc["per_seed"]
            if len(per_seed) == 1:  # one seed: the value with its patient-level CI
                only = per_seed[0]
                macro = _fmt_ci({"auroc": only["macro_auroc"], "auroc_ci": only["macro_auroc_ci"]})
                nf = _fmt_ci({"auroc": only["no_finding_auroc"], "auroc_ci": only["no_finding_auroc_ci"]})
            else:
                macro, nf = _fmt_spread(auroc["macro"]), _fmt_spread(auroc["no_finding"])
            classes = [_fmt_spread(auroc["classes"][t]) for t in TARGETS]
            lines.append(f"| {mode} | {len(per_seed)} | " + " | ".join(classes) + f" | {macro} | {nf} |")
        share = entry.get("inverse_share_of_original_margin")
        if share is not None and math.isfinite(share):
            lines += ["", f"`inverse` keeps {share:.0%} of the `original` macro AUROC's margin above chance "
                          "((inverse - 0.5) / (original - 0.5))."]
        if entry["tests"]:
            lines += ["", "| A | B | seeds | macro diff A-B | DeLong p per seed: " + ", ".join(COLUMNS)
                      + " | macro p per seed (bootstrap) | over seeds: t-test p, Wilcoxon p |",
                      "|---" * 6 + "|"]
            for t in entry["tests"]:
                delong_cells = " / ".join(", ".join(_fmt_p(e["delong_p"][c]) for c in COLUMNS) for e in t["per_seed"])
                boot = ", ".join(_fmt_p(e["macro_bootstrap_p"]) for e in t["per_seed"])
                over = t["macro_auroc_diff"]
                seeds_p = f"{_fmt_p(over['t_test_p'])}, {_fmt_p(over['wilcoxon_p'])}" if over["n"] > 1 else "n/a (one seed)"
                lines.append(f"| {t['mode_a']} | {t['mode_b']} | {len(t['seeds'])} | {_fmt_spread(over)} | "
                             f"{delong_cells} | {boot} | {seeds_p} |")
        lines.append("")
    return lines


def _seed_markdown(cells, cell_comparisons):
    """Seed variance per cell and the cell comparisons over seeds (only when a cell has several seeds)."""
    if not any(len(c["per_seed"]) > 1 for c in cells):
        return []
    lines = ["", "## Seed variance per cell (test AUROC)", "",
             "Mean ± SD (min to max) over the training seeds; per seed the value and its patient-level 95% CI.", "",
             "| cell | seeds | macro: mean ± SD (min to max) | macro per seed (95% CI) | No Finding: mean ± SD (min to max) "
             "| No Finding per seed (95% CI) |", "|---" * 6 + "|"]
    for c in cells:
        lines.append(f"| {c['label']} | {len(c['per_seed'])} | {_fmt_spread(c['macro_auroc'])} | "
                     f"{_fmt_seed_values(c['per_seed'], 'macro_auroc')} | {_fmt_spread(c['no_finding_auroc'])} | "
                     f"{_fmt_seed_values(c['per_seed'], 'no_finding_auroc')} |")
    if cell_comparisons:
        lines += ["", "## Cell comparisons over seeds", "",
                  "Cells that differ in one setting, paired by seed. Seed variance: paired t-test and Wilcoxon "
                  "signed-rank test of the per-seed differences, and a bootstrap resampling patients and seeds. "
                  "Per seed: DeLong p of No Finding and the patient-bootstrap p of the macro difference.", "",
                  "| cell A | cell B | differs in | seeds | macro diff A-B: mean ± SD (min to max) | t-test p | Wilcoxon p "
                  "| patients+seeds bootstrap 95% CI, p | No Finding diff: mean ± SD | t-test p | per seed: No Finding "
                  "DeLong p | per seed: macro bootstrap p |", "|---" * 12 + "|"]
        for c in cell_comparisons:
            m, nf = c["macro_auroc_diff"], c["no_finding_auroc_diff"]
            low, high = c["macro_auroc_diff_patients_seeds_ci"]
            lines.append(
                f"| {c['cell_a']} | {c['cell_b']} | {', '.join(c['differs_in']) or '-'} | {len(c['seeds'])} | "
                f"{_fmt_spread(m)} | {_fmt_p(m['t_test_p'])} | {_fmt_p(m['wilcoxon_p'])} | "
                f"{_fmt(low)} to {_fmt(high)}, {_fmt_p(c['macro_auroc_diff_patients_seeds_p'])} | {_fmt_spread(nf)} | "
                f"{_fmt_p(nf['t_test_p'])} | "
                + ", ".join(_fmt_p(e["delong_p"][NO_FINDING]) for e in c["per_seed"]) + " | "
                + ", ".join(_fmt_p(e["macro_bootstrap_p"]) for e in c["per_seed"]) + " |")
        lines += ["", f"{len(cell_comparisons)} cell comparisons, not corrected for multiple testing. "
                      "With 3 seeds the smallest two-sided Wilcoxon p is 0.25."]
    return lines


def _pick_examples(run, count):
    """Up to `count` test rows: one positive per target in order, then the first others."""
    df = run.predictions
    chosen, explain = [], []
    for t in TARGETS:
        rows = df.index[(df[f"y_{t}"] == 1) & ~df.index.isin(chosen)]
        if len(rows) and len(chosen) < count:
            chosen.append(int(rows[0]))
            explain.append(TARGETS.index(t))
    for i in df.index:
        if len(chosen) >= count:
            break
        if i not in chosen:
            chosen.append(int(i))
            explain.append(None)
    return chosen, explain


def _load_model(path):
    import keras

    import tfcxr.models  # noqa: F401  registers the tfcxr custom layers

    return keras.models.load_model(path, compile=False)


def _figures(runs, result, out_dir, gradcam_images, notes):
    figures = []
    for run, r in zip(runs, result["runs"]):
        y = np.concatenate([run.labels(), run.no_finding_labels()[:, None]], 1)
        s = np.concatenate([run.probabilities(), _no_finding_scores(run.probabilities(), r["no_finding_score"])[:, None]], 1)
        curves = [(name, y[:, k], s[:, k], r["classes"][name]["auroc"]) for k, name in enumerate(COLUMNS)]
        path = plots.roc_curves_png(out_dir / f"roc_{_safe_name(run.name)}.png", f"ROC: {run.label}", curves)
        figures.append((f"ROC curves, {run.label}", path))
    panels = []
    for k, name in enumerate(COLUMNS):
        entries = []
        for run, r in zip(runs, result["runs"]):
            y = run.labels()[:, k] if k < len(TARGETS) else run.no_finding_labels()
            s = run.probabilities()[:, k] if k < len(TARGETS) else _no_finding_scores(run.probabilities(), r["no_finding_score"])
            entries.append((run.label, y, s, r["classes"][name]["auroc"]))
        panels.append((name, entries))
    figures.append(("ROC overlay across runs", plots.roc_overlay_png(out_dir / "roc_overlay.png", panels)))
    bars = []
    for r in result["runs"]:
        vals = [(r["classes"][t]["auroc"], *r["classes"][t]["auroc_ci"]) for t in TARGETS]
        vals.append((r[MACRO]["auroc"], *r[MACRO]["auroc_ci"]))
        vals.append((r["classes"][NO_FINDING]["auroc"], *r["classes"][NO_FINDING]["auroc_ci"]))
        bars.append((r["label"], vals))
    figures.append(("Mask-mode comparison (AUROC, 95% CI)",
                    plots.comparison_png(out_dir / "mask_mode_comparison.png", TARGETS + (MACRO, NO_FINDING), bars)))
    if gradcam_images > 0:
        figures += _image_figures(runs, out_dir, gradcam_images, notes)
    return figures


def _image_figures(runs, out_dir, count, notes):
    """Mask overlay grid and Grad-CAM grid on the same few test images of the first run."""
    import tensorflow as tf

    from tfcxr.evaluation import gradcam

    expected = (ImportError, OSError, ValueError, tf.errors.OpError)
    figures = []
    base = runs[0]
    rows, explain = _pick_examples(base, count)
    picked = base.predictions.loc[rows]
    image_paths = picked["image_path"].astype(str).tolist()
    mask_paths = [""] * len(rows)
    for run in runs:  # an `original` run may have no mask_path; take the lung masks from any run that has them
        known = run.predictions.set_index("image_id")["mask_path"].fillna("").astype(str)
        mask_paths = [m or known.get(iid, "") for m, iid in zip(mask_paths, picked["image_id"])]
    row_titles = [f"{iid}\n{','.join(t for t in TARGETS if picked.loc[i, f'y_{t}'] == 1) or 'no target'}"
                  for i, iid in zip(rows, picked["image_id"])]
    size = max(192, int(base.config.get("image_size", 224) or 224))  # display size of the mask grid

    # Mask overlay grid: the lung mask contour, then one column per masking mode of the runs.
    modes = []
    for run in runs:
        if run.mask not in [m for m, _ in modes]:
            modes.append((run.mask, run.config))
    try:
        if not any(mask_paths):
            raise ValueError(f"{base.files.predictions_path.name} has no mask_path values")
        _, raw, masks = gradcam.prepare_inputs(image_paths, mask_paths, {"mask": "original"}, size)
        grid = [[(raw[i], masks[i])] for i in range(len(rows))]
        titles = ["image + lung mask"]
        for mode, config in modes:
            inputs, _, _ = gradcam.prepare_inputs(image_paths, mask_paths, config, size)
            for i in range(len(rows)):
                grid[i].append((inputs[i], None))
            margin = config.get("margin")
            titles.append(f"{mode}" + (f" (margin {margin})" if mode in ("loose", "box") and margin is not None else ""))
        figures.append(("Lung masks and masking modes",
                        plots.image_grid_png(out_dir / "mask_overlay_grid.png", grid, titles, row_titles)))
    except expected as err:
        notes.append(f"Mask overlay grid skipped: {err}")
        logger.warning("Mask overlay grid skipped: %s", err)

    # Grad-CAM: one column per run, each on that run's own masked input.
    grid, heat, captions, titles = [[] for _ in rows], [[] for _ in rows], [[] for _ in rows], []
    for run in runs:
        try:
            if not run.model_path.is_file():
                raise FileNotFoundError(f"{run.model_path}: missing")
            model = _load_model(run.model_path)
            run_size = model.inputs[0].shape[1] or int(run.config.get("image_size", size))
            inputs, _, _ = gradcam.prepare_inputs(image_paths, mask_paths, run.config, run_size)
            probs = np.asarray(model(inputs, training=False))
            idx = [e if e is not None else int(np.argmax(p)) for e, p in zip(explain, probs)]
            cams, probs = gradcam.grad_cam(model, inputs, idx)
        except expected as err:
            notes.append(f"Grad-CAM skipped for {run.label}: {err}")
            logger.warning("Grad-CAM skipped for %s: %s", run.label, err)
            continue
        titles.append(run.label)
        for i in range(len(rows)):
            grid[i].append((inputs[i], None))
            heat[i].append(cams[i])
            no_evidence = "" if np.max(cams[i]) > 0 else ", no positive evidence"  # all-zero map after ReLU
            captions[i].append(f"{TARGETS[idx[i]]} p={probs[i, idx[i]]:.2f}{no_evidence}")
    if titles:
        figures.append(("Grad-CAM (class explained and its probability under each cell)",
                        plots.image_grid_png(out_dir / "gradcam.png", grid, titles, row_titles, heat, captions)))
    return figures


def write_report(runs, out_dir, num_resamples=1000, seed=0, ci_level=0.95, specificity=0.9,
                 no_finding_score=None, require_same_test_set=True, gradcam_images=4,
                 title="tfcxr evaluation report"):
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
                           require_same_test_set)
    notes = []
    figures = _figures(runs, result, out_dir, gradcam_images, notes)
    result["figures"] = {caption: path.name for caption, path in figures}
    result["notes"] = notes
    with open(out_dir / "metrics.json", "w", encoding="utf-8") as f:
        json.dump(_json_ready(result), f, indent=2, allow_nan=False)
    (out_dir / "report.md").write_text(_markdown(result, figures, notes, title), encoding="utf-8")
    logger.info("Wrote %s", out_dir / "report.md")
    return result
