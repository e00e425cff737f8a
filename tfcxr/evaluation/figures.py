"""The report's figures: ROC curves, the AUROC bar chart, and the mask and Grad-CAM grids that load models.

Drawing is `tfcxr.evaluation.plots`; Grad-CAM and the masked inputs are
`tfcxr.evaluation.gradcam`. Each function returns (caption, path) pairs.
"""

import logging

import numpy as np

from tfcxr.evaluation import gradcam, plots
from tfcxr.evaluation.columns import COLUMNS, MACRO, no_finding_scores
from tfcxr.labels import NO_FINDING, TARGETS

logger = logging.getLogger(__name__)


def report_figures(runs, result, out_dir, gradcam_images, notes):
    """Every figure of the report in `out_dir`; skipped image figures are appended to `notes`."""
    figures = _roc_figures(runs, result, out_dir)
    figures.append(_comparison_figure(result, out_dir))
    if gradcam_images > 0:
        figures += _image_figures(runs, out_dir, gradcam_images, notes)
    return figures


def _safe_name(name):
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _roc_figures(runs, result, out_dir):
    """roc_<run>.png per run, then roc_overlay.png (one panel per column, all runs)."""
    figures = []
    for run, r in zip(runs, result["runs"]):
        y = np.concatenate([run.labels(), run.no_finding_labels()[:, None]], 1)
        s = np.concatenate([run.probabilities(), no_finding_scores(run.probabilities(), r["no_finding_score"])[:, None]], 1)
        curves = [(name, y[:, k], s[:, k], r["classes"][name]["auroc"]) for k, name in enumerate(COLUMNS)]
        path = plots.roc_curves_png(out_dir / f"roc_{_safe_name(run.name)}.png", f"ROC: {run.label}", curves)
        figures.append((f"ROC curves, {run.label}", path))
    panels = []
    for k, name in enumerate(COLUMNS):
        entries = []
        for run, r in zip(runs, result["runs"]):
            y = run.labels()[:, k] if k < len(TARGETS) else run.no_finding_labels()
            s = run.probabilities()[:, k] if k < len(TARGETS) else no_finding_scores(run.probabilities(), r["no_finding_score"])
            entries.append((run.label, y, s, r["classes"][name]["auroc"]))
        panels.append((name, entries))
    figures.append(("ROC overlay across runs", plots.roc_overlay_png(out_dir / "roc_overlay.png", panels)))
    return figures


def comparison_bars(result):
    """The AUROC bar chart's bars: one per run, or one per cell (mean over seeds) when a cell has several seeds.

    Args:
        result: `tfcxr.evaluation.report.evaluate_runs`'s dict.

    Returns:
        (whisker label, [(bar label, [(auroc, low, high) per column of TARGETS + (MACRO, NO_FINDING)])]). Per run
        the whiskers are the run's 95% patient-bootstrap CI; per cell they span the seeds' lowest to highest AUROC.
    """
    if any(len(cell["runs"]) > 1 for cell in result.get("cells", [])):
        bars = []
        for cell in result["cells"]:
            spreads = [cell["classes"][t] for t in TARGETS] + [cell["macro_auroc"], cell["no_finding_auroc"]]
            bars.append((f"{cell['label']} ({len(cell['runs'])} seeds)",
                         [(v["mean"], v["min"], v["max"]) for v in spreads]))
        return "AUROC, mean over seeds (whiskers: lowest to highest seed)", bars
    bars = []
    for r in result["runs"]:
        vals = [(r["classes"][t]["auroc"], *r["classes"][t]["auroc_ci"]) for t in TARGETS]
        vals.append((r[MACRO]["auroc"], *r[MACRO]["auroc_ci"]))
        vals.append((r["classes"][NO_FINDING]["auroc"], *r["classes"][NO_FINDING]["auroc_ci"]))
        bars.append((r["label"], vals))
    return "AUROC (95% patient bootstrap CI)", bars


def _comparison_figure(result, out_dir):
    """mask_mode_comparison.png: AUROC bars with whiskers, one bar per run or per multi-seed cell."""
    whiskers, bars = comparison_bars(result)
    return (f"Mask-mode comparison: {whiskers}",
            plots.comparison_png(out_dir / "mask_mode_comparison.png", TARGETS + (MACRO, NO_FINDING), bars,
                                 ylabel=whiskers))


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


def _examples(runs, count):
    """The test images of both grids (from the first run): image and mask paths, row titles, class to explain,
    and the display size of the mask grid."""
    base = runs[0]
    rows, explain = _pick_examples(base, count)
    picked = base.predictions.loc[rows]
    image_paths = picked["image_path"].astype(str).tolist()
    mask_paths = [""] * len(rows)
    for run in runs:  # an `original` run may have no mask_path; take the lung masks from any run that has them
        paths = run.predictions.set_index("image_id")["mask_path"].astype(object)  # all-empty columns read as float
        known = paths.where(paths.notna(), "").astype(str)
        mask_paths = [m or known.get(iid, "") for m, iid in zip(mask_paths, picked["image_id"])]
    row_titles = [f"{iid}\n{','.join(t for t in TARGETS if picked.loc[i, f'y_{t}'] == 1) or 'no target'}"
                  for i, iid in zip(rows, picked["image_id"])]
    size = max(192, int(base.config.get("image_size", 224) or 224))  # display size of the mask grid
    return image_paths, mask_paths, row_titles, explain, size


def _image_figures(runs, out_dir, count, notes):
    """Mask overlay grid and Grad-CAM grid on the same few test images of the first run."""
    import tensorflow as tf

    expected = (ImportError, OSError, ValueError, tf.errors.OpError)
    examples = _examples(runs, count)
    figures = []
    try:
        figures.append(_mask_grid(runs, out_dir, examples))
    except expected as err:
        notes.append(f"Mask overlay grid skipped: {err}")
        logger.warning("Mask overlay grid skipped: %s", err)
    figure = _gradcam_grid(runs, out_dir, examples, expected, notes)
    if figure is not None:
        figures.append(figure)
    return figures


def _mask_grid(runs, out_dir, examples):
    """mask_overlay_grid.png: the lung mask contour, then one column per masking mode of the runs."""
    image_paths, mask_paths, row_titles, _, size = examples
    base = runs[0]
    modes = []
    for run in runs:
        if run.mask not in [m for m, _ in modes]:
            modes.append((run.mask, run.config))
    if not any(mask_paths):
        raise ValueError(f"{base.files.predictions_path.name} has no mask_path values")
    _, raw, masks = gradcam.prepare_inputs(image_paths, mask_paths, {"mask": "original"}, size)
    grid = [[(raw[i], masks[i])] for i in range(len(image_paths))]
    titles = ["image + lung mask"]
    for mode, config in modes:
        inputs, _, _ = gradcam.prepare_inputs(image_paths, mask_paths, config, size)
        for i in range(len(image_paths)):
            grid[i].append((inputs[i], None))
        margin = config.get("margin")
        titles.append(f"{mode}" + (f" (margin {margin})" if mode in ("loose", "box") and margin is not None else ""))
    return ("Lung masks and masking modes",
            plots.image_grid_png(out_dir / "mask_overlay_grid.png", grid, titles, row_titles))


def _gradcam_grid(runs, out_dir, examples, expected, notes):
    """gradcam.png: one column per run, each on that run's own masked input (None when no run has a model)."""
    image_paths, mask_paths, row_titles, explain, size = examples
    n = len(image_paths)
    grid, heat, captions, titles = [[] for _ in range(n)], [[] for _ in range(n)], [[] for _ in range(n)], []
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
        for i in range(n):
            grid[i].append((inputs[i], None))
            heat[i].append(cams[i])
            no_evidence = "" if np.max(cams[i]) > 0 else ", no positive evidence"  # all-zero map after ReLU
            captions[i].append(f"{TARGETS[idx[i]]} p={probs[i, idx[i]]:.2f}{no_evidence}")
    if not titles:
        return None
    return ("Grad-CAM (class explained and its probability under each cell)",
            plots.image_grid_png(out_dir / "gradcam.png", grid, titles, row_titles, heat, captions))

