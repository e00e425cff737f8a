"""Report figures (matplotlib, Agg backend): ROC curves, mask-mode comparison, image grids.

Every function writes one PNG and returns its path. matplotlib is imported
inside the functions so that importing this module stays cheap.
"""

import math
import pathlib

import numpy as np

_DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _roc(y, s):
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr


def _auc_text(value):
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _defined(y):
    y = np.asarray(y)
    return 0 < int(y.sum()) < y.size


def roc_curves_png(path, title, curves):
    """One axes with a ROC curve per class of one run.

    Args:
        path: output PNG.
        title: figure title (run label).
        curves: list of (name, y_true (N,), scores (N,), auroc float or NaN); classes
            without both labels are listed in the legend as "n/a (reason)" without a curve.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    for name, y, s, auc in curves:
        if _defined(y):
            fpr, tpr = _roc(y, s)
            ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUROC {_auc_text(auc)}, n+={int(np.sum(y))})")
        else:
            ax.plot([], [], " ", label=f"{name}: AUROC n/a (no positives or negatives)")
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title=title)
    ax.legend(loc="lower right", fontsize=7.5)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return pathlib.Path(path)


def roc_overlay_png(path, panels):
    """A grid of axes, one per class, each overlaying the ROC curves of every run.

    Args:
        path: output PNG.
        panels: list of (class name, [(run label, y_true (N,), scores (N,), auroc), ...]).
    """
    plt = _pyplot()
    ncols = 3
    nrows = int(math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 4.0 * nrows), squeeze=False)
    for ax, (name, runs) in zip(axes.ravel(), panels):
        for label, y, s, auc in runs:
            if _defined(y):
                fpr, tpr = _roc(y, s)
                ax.plot(fpr, tpr, lw=1.3, label=f"{label} ({_auc_text(auc)})")
        if not any(_defined(y) for _, y, _, _ in runs):
            ax.text(0.5, 0.5, "AUROC undefined:\nno positives or negatives", ha="center", va="center")
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), title=name, xlabel="FPR", ylabel="TPR")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return pathlib.Path(path)


def comparison_png(path, class_names, runs, ylabel="AUROC (95% patient bootstrap CI)"):
    """Grouped bars: AUROC per class (and macro, No Finding) per run or cell, with whiskers.

    Args:
        path: output PNG.
        class_names: x-axis groups, e.g. TARGETS + ("macro", "No Finding").
        runs: list of (bar label, [(auroc, low, high) per class name]); NaN or None = not drawn.
        ylabel: what the bars and whiskers are.
    """
    plt = _pyplot()
    n_runs = max(1, len(runs))
    width = 0.8 / n_runs
    x = np.arange(len(class_names))
    colours = plt.get_cmap("tab20" if n_runs > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(class_names) + 0.25 * n_runs), 4.6))
    for i, (label, values) in enumerate(runs):
        v = np.array([np.nan if a is None else a for a, _, _ in values], dtype=float)
        lo = np.array([np.nan if b is None else b for _, b, _ in values], dtype=float)
        hi = np.array([np.nan if c is None else c for _, _, c in values], dtype=float)
        err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
        err = np.where(np.isfinite(err), err, 0.0)
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(v, nan=0.0), width, yerr=err, capsize=2,
               label=label, color=colours(i % colours.N), error_kw={"lw": 0.8})
    ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
    ax.set_xticks(x, class_names)
    ax.set(ylim=(0, 1.05), ylabel=ylabel, title="AUROC by run or cell (backbone / mask)")
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the bars
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return pathlib.Path(path)


def image_grid_png(path, rows, column_titles, row_titles=None, heatmaps=None, captions=None):
    """A grid of grayscale images, optionally with a red lung contour or a heatmap overlay.

    Args:
        path: output PNG.
        rows: list of rows; each a list of cells `(image (H, W) or (H, W, 1) float in [0, 1],
            contour (H, W) bool or None)`.
        column_titles: one title per column.
        row_titles: one text per row (drawn as the y label of the first cell), or None.
        heatmaps: same nesting as rows, each cell an (H, W) float in [0, 1] or None.
        captions: same nesting as rows, a short text under each cell, or None.
    """
    plt = _pyplot()
    nrows, ncols = len(rows), len(column_titles)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.75 * nrows), squeeze=False)
    for r, row in enumerate(rows):
        for c, (image, contour) in enumerate(row):
            ax = axes[r, c]
            ax.imshow(np.squeeze(image), cmap="gray", vmin=0, vmax=1)
            if contour is not None and np.any(contour):
                ax.contour(np.asarray(contour, dtype=float), levels=[0.5], colors="red", linewidths=0.9)
            if heatmaps is not None and heatmaps[r][c] is not None:
                ax.imshow(heatmaps[r][c], cmap="jet", alpha=0.4, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=8.5)
            if c == 0 and row_titles:
                ax.set_ylabel(row_titles[r], fontsize=7.5)
            if captions is not None and captions[r][c]:
                ax.set_xlabel(captions[r][c], fontsize=7.5)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return pathlib.Path(path)
