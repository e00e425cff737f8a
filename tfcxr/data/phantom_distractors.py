"""Label-unrelated bright context drawn outside the lungs: ECG electrodes, wires and tubes, a side marker.

They lie at least one pixel away from the lungs, so `original` images carry nuisance context that tight
masking removes and loose masking partly keeps. This makes the synthetic demo favour masking by design.
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
    for _ in range(int(rng.integers(0, 3))):  # wires and tubes
        xs = np.cumsum(rng.normal(0, 0.04, size=8)) * s + rng.uniform(0.2, 0.8) * s
        ys = np.linspace(rng.uniform(0, 0.3), rng.uniform(0.6, 1.0), 8) * s
        cv2.polylines(layer, [polyline_points(xs, ys)], False, 0.25, max(1, int(round(0.008 * s))), cv2.LINE_AA, 4)
    letter = "R" if view == "PA" else "L"
    corner = (int(0.04 * s), int(0.12 * s)) if rng.random() < 0.5 else (int(0.88 * s), int(0.12 * s))
    text = np.zeros((s, s), np.uint8)  # putText draws on 8-bit images only
    cv2.putText(text, letter, corner, cv2.FONT_HERSHEY_SIMPLEX, 0.0025 * s, 255, max(1, int(0.006 * s)), cv2.LINE_AA)
    layer += text.astype(np.float32) * (0.8 / 255)
    outside = 1.0 - cv2.dilate(union, np.ones((3, 3), np.uint8)).astype(np.float32)
    return layer * outside
