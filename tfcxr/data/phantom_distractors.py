"""Bright context drawn outside the lungs: label-unrelated distractors and a label-correlated support device.

- `draw_distractors`: ECG electrodes, wires and a side marker, independent of the labels. `original` images
  carry nuisance context that tight masking removes and loose masking partly keeps.
- `draw_tube`: an endotracheal tube down the trachea (the mediastinum, between the lungs). The synthetic set
  draws it far more often on images with Edema or Pneumonia, as intubated ICU patients' films carry both:
  a shortcut outside the lungs that the `inverse` mask mode can find.

Both lie at least one pixel away from the lungs, so masking to the lungs removes them.
"""

import cv2
import numpy as np

from tfcxr.data.phantom_draw import polyline_points


def draw_distractors(view, union, size, rng):
    """Distractor layer, float32 (S, S), zero on and next to the lungs.

    Args:
        view: "PA" or "AP"; picks the side marker's letter.
        union: uint8 (S, S) in {0, 1}, both lungs.
        size: S.
        rng: the case's distractor `numpy.random.Generator`.
    """
    s = size
    layer = np.zeros((s, s), np.float32)
    for _ in range(int(rng.choice([0, 0, 1, 2]))):  # ECG electrodes: rings with a bright snap
        x, y = rng.uniform(0.1, 0.9) * s, rng.uniform(0.05, 0.95) * s
        radius = rng.uniform(0.015, 0.03) * s
        center = (int(x * 16), int(y * 16))
        cv2.circle(layer, center, int(radius * 16), 0.45, max(1, int(round(0.006 * s))), cv2.LINE_AA, 4)
        cv2.circle(layer, center, int(radius * 0.35 * 16), 0.7, -1, cv2.LINE_AA, 4)
    for _ in range(int(rng.integers(0, 3))):  # ECG wires (the endotracheal tube is `draw_tube`)
        xs = np.cumsum(rng.normal(0, 0.04, size=8)) * s + rng.uniform(0.2, 0.8) * s
        ys = np.linspace(rng.uniform(0, 0.3), rng.uniform(0.6, 1.0), 8) * s
        cv2.polylines(layer, [polyline_points(xs, ys)], False, 0.25, max(1, int(round(0.008 * s))), cv2.LINE_AA, 4)
    letter = "R" if view == "PA" else "L"
    corner = (int(0.04 * s), int(0.12 * s)) if rng.random() < 0.5 else (int(0.88 * s), int(0.12 * s))
    text = np.zeros((s, s), np.uint8)  # putText draws on 8-bit images only
    cv2.putText(text, letter, corner, cv2.FONT_HERSHEY_SIMPLEX, 0.0025 * s, 255, max(1, int(0.006 * s)), cv2.LINE_AA)
    layer += text.astype(np.float32) * (0.8 / 255)
    return layer * _outside(union)


def draw_tube(union, size, rng):
    """An endotracheal tube: float32 (S, S), a bright line from the top edge down the midline between the lungs,
    zero on and next to the lungs.

    Args:
        union: uint8 (S, S) in {0, 1}, both lungs.
        size: S.
        rng: the case's tube `numpy.random.Generator` (the tube's course and tip).
    """
    s = size
    columns = np.flatnonzero(union.any(axis=0))
    rows = np.flatnonzero(union.any(axis=1))
    middle = s / 2 if columns.size == 0 else 0.5 * (columns[0] + columns[-1])  # between the lungs
    tip = (0.35 * s if rows.size == 0 else rows[0] + 0.3 * (rows[-1] - rows[0])) * rng.uniform(0.9, 1.1)
    ys = np.linspace(0.0, tip, 6)
    xs = middle + np.cumsum(rng.normal(0, 0.004, size=6)) * s
    layer = np.zeros((s, s), np.float32)
    cv2.polylines(layer, [polyline_points(xs, ys)], False, 0.7, max(1, int(round(0.03 * s))), cv2.LINE_AA, 4)
    cv2.circle(layer, (int(xs[-1] * 16), int(ys[-1] * 16)), int(0.01 * s * 16), 0.8, -1, cv2.LINE_AA, 4)
    return layer * _outside(union)


def _outside(union):
    """float32 (S, S): 1 farther than one pixel from the lungs, else 0."""
    return 1.0 - cv2.dilate(union, np.ones((3, 3), np.uint8)).astype(np.float32)
