"""Compute the evaluation of one or more runs and write the report folder (DESIGN.md §6).

REPORTDIR/
    metrics.json            every number below; NaN is written as null with a reason
    report.md               tables: mask-mode comparison (AUROC + 95% CI), AUPRC, sensitivity
                            at 90% specificity, DeLong p-values, training efficiency
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
from tfcxr.evaluation.runs import check_same_test_images, config_value, epochs_to_best
from tfcxr.labels import NO_FINDING, TARGETS

logger = logging.getLogger(__name__)

MACRO = "macro"
COLUMNS = TARGETS + (NO_FINDING,)  # bootstrap columns: the 5 targets, then No Finding


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
        with warnings.catch_warnings():  # "Mean of empty slice" where every class is undefined
            warnings.simplefilter("ignore", RuntimeWarning)
            macro_boot[m] = np.nanmean(boot[m][:, cols], axis=1) if cols else np.full(num_resamples, np.nan)
        ci = bootstrap.percentile_ci(macro_boot[m], level)
        macro[f"{m}_ci"] = [ci["low"], ci["high"]]
        macro[f"{m}_valid_resamples"] = ci["valid_resamples"]

    efficiency = dict(run.efficiency or {})
    efficiency.update(epochs_to_best(run.history))
    result = {
        "name": run.name,
        "label": run.label,
        "run_dir": str(run.run_dir),
        "backbone": run.backbone,
        "mask": run.mask,
        "margin": config_value(run.config, "margin"),
        "image_size": config_value(run.config, "image_size"),
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
        no_finding_score: "max" or "prod"; None takes each run's config
            `no_finding_score` (default "max").
        require_same_test_set: raise when two runs differ in test images; False skips
            the comparisons of those pairs instead (with a note).

    Returns:
        dict with "settings", "runs" (one entry per run) and "comparisons" (one per pair).
    """
    if not runs:
        raise ValueError("No runs to evaluate")
    results, macro_boots = [], []
    for run in runs:
        method = no_finding_score or str(config_value(run.config, "no_finding_score", "max"))
        if method not in ("max", "prod"):
            raise ValueError(f"`no_finding_score` must be one of ('max', 'prod'). Received: {method!r} "
                             f"(from {run.run_dir / 'config.yaml'})")
        logger.info("Evaluating %s (%s): %d test images", run.name, run.label, len(run.predictions))
        result, macro_boot = _evaluate_one(run, num_resamples, seed, ci_level, specificity, method)
        results.append(result)
        macro_boots.append(macro_boot)

    comparisons = []
    for (i, a), (j, b) in itertools.combinations(enumerate(runs), 2):
        try:
            check_same_test_images(a, b)
        except ValueError as err:
            if require_same_test_set:
                raise
            comparisons.append({"run_a": a.name, "run_b": b.name, "skipped": str(err)})
            continue
        scores_a = np.concatenate([a.probabilities(), _no_finding_scores(a.probabilities(), results[i]["no_finding_score"])[:, None]], 1)
        scores_b = np.concatenate([b.probabilities(), _no_finding_scores(b.probabilities(), results[j]["no_finding_score"])[:, None]], 1)
        y_all = np.concatenate([a.labels(), a.no_finding_labels()[:, None]], 1)
        tests = {name: delong.delong_test(y_all[:, k], scores_a[:, k], scores_b[:, k]) for k, name in enumerate(COLUMNS)}
        diff = macro_boots[i] - macro_boots[j]
        ci = bootstrap.percentile_ci(diff, ci_level)
        comparisons.append({
            "run_a": a.name, "run_b": b.name, "label_a": a.label, "label_b": b.label,
            "n_images": int(len(a.predictions)),
            "delong": tests,
            "macro_auroc_diff": results[i][MACRO]["auroc"] - results[j][MACRO]["auroc"],
            "macro_auroc_diff_ci": [ci["low"], ci["high"]],
            "macro_auroc_diff_bootstrap_p": _p_two_sided(diff),
        })
    settings = {
        "targets": list(TARGETS),
        "bootstrap": {"unit": "patient", "num_resamples": num_resamples, "seed": seed, "ci_level": ci_level,
                      "interval": "percentile"},
        "specificity": specificity,
        "macro": "mean AUROC over the targets with positives and negatives in the test set",
        "delong": "fast DeLong (Sun & Xu 2014), two-sided, paired on image_id",
    }
    return {"settings": settings, "runs": results, "comparisons": comparisons}


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
    size = max(192, int(config_value(base.config, "image_size", 224) or 224))  # display size of the mask grid

    # Mask overlay grid: the lung mask contour, then one column per masking mode of the runs.
    modes = []
    for run in runs:
        if run.mask not in [m for m, _ in modes]:
            modes.append((run.mask, run.config))
    try:
        if not any(mask_paths):
            raise ValueError("test_predictions.csv has no mask_path values")
        _, raw, masks = gradcam.prepare_inputs(image_paths, mask_paths, {"mask": "original"}, size)
        grid = [[(raw[i], masks[i])] for i in range(len(rows))]
        titles = ["image + lung mask"]
        for mode, config in modes:
            inputs, _, _ = gradcam.prepare_inputs(image_paths, mask_paths, config, size)
            for i in range(len(rows)):
                grid[i].append((inputs[i], None))
            margin = config_value(config, "margin")
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
            run_size = model.inputs[0].shape[1] or int(config_value(run.config, "image_size", size))
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
