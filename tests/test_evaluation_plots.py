"""The report's PNG figures (tfcxr.evaluation.plots): ROC curves, the overlay grid, AUROC bars and image grids."""

import math
import warnings

import cv2
import numpy as np

from tfcxr.evaluation import plots


def _read(path):
    """(H, W, 3) uint8 RGB of a written PNG (fails when the file is not a PNG)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} is not a readable image"
    return image[..., ::-1]


def _red_pixels(rgb):
    r, g, b = (rgb[..., k].astype(int) for k in range(3))
    return int(np.sum((r > g + 40) & (r > b + 40)))


def test_auc_text_and_defined_classes():
    assert plots._auc_text(0.81234) == "0.812" and plots._auc_text(math.nan) == "n/a" and plots._auc_text(None) == "n/a"
    assert plots._defined([0, 1, 0]) and not plots._defined([0, 0]) and not plots._defined([1, 1])


def test_roc_curves_skip_classes_with_one_label(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    curves = [("Mass", y, y + rng.normal(0, 0.5, 50), 0.8), ("Nodule", np.zeros(50, int), rng.random(50), math.nan)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn warns (UndefinedMetricWarning) if a one-label ROC is drawn
        path = plots.roc_curves_png(tmp_path / "roc.png", "ROC: run", curves)
    assert path == tmp_path / "roc.png" and _read(path).ndim == 3


def test_roc_overlay_has_three_panels_per_row(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40)
    entry = [("run a", y, y + rng.normal(0, 0.5, 40), 0.7), ("run b", y, rng.random(40), 0.5)]
    undefined = [("run a", np.ones(40, int), rng.random(40), math.nan)]
    three = _read(plots.roc_overlay_png(tmp_path / "three.png", [("A", entry), ("B", entry), ("C", undefined)]))
    four = _read(plots.roc_overlay_png(tmp_path / "four.png", [("A", entry)] * 4))
    assert four.shape[1] == three.shape[1]  # still three columns
    assert abs(four.shape[0] - 2 * three.shape[0]) <= 2  # a second row


def test_comparison_bars_accept_missing_values(tmp_path):
    runs = [("a", [(0.8, 0.7, 0.9), (None, None, None), (math.nan, 0.4, 0.6)]),
            ("b", [(0.6, math.nan, 0.7), (0.5, 0.4, 0.6), (0.7, 0.6, 0.8)])]
    path = plots.comparison_png(tmp_path / "bars.png", ("Mass", "macro", "No Finding"), runs)
    assert _read(path).shape[2] == 3


def test_image_grid_draws_contours_and_heatmaps(tmp_path):
    image = np.full((32, 32, 1), 0.5, np.float32)
    contour = np.zeros((32, 32), bool)
    contour[8:24, 8:24] = True
    plain = _read(plots.image_grid_png(tmp_path / "plain.png", [[(image, None)]], ["image"]))
    outlined = _read(plots.image_grid_png(tmp_path / "outlined.png", [[(image, contour)]], ["image"]))
    assert _red_pixels(plain) == 0 and _red_pixels(outlined) > 20
    heat = _read(plots.image_grid_png(tmp_path / "heat.png", [[(image, None)]], ["image"],
                                      heatmaps=[[np.ones((32, 32))]], captions=[["Mass p=0.90"]]))
    assert _red_pixels(heat) > 20 * _red_pixels(outlined)  # jet at 1.0 (dark red) tints the whole cell
    wide = _read(plots.image_grid_png(tmp_path / "wide.png", [[(image, None)] * 3] * 2, ["a", "b", "c"],
                                      row_titles=["r1", "r2"]))
    assert abs(wide.shape[1] - 3 * plain.shape[1]) <= 3 and abs(wide.shape[0] - 2 * plain.shape[0]) <= 3
