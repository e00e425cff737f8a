"""The five target findings, drawn as an intensity layer that the caller multiplies by the hard lung mask.

- Mass: one large bright lobulated blob.
- Nodule: three to six small bright dots.
- Fibrosis: reticular texture (many short thin lines), mostly basal and peripheral.
- Edema: diffuse bilateral perihilar haze with a few Kerley B lines at the bases.
- Pneumonia: one focal patchy haze in one zone (lobe) of one lung.

`lungs` is the per-lung tuple of `tfcxr.data.phantom_anatomy.draw_anatomy` (mask uint8 (S, S), box
(x0, y0, x1, y1), hilum (x, y); right lung first). Boxes are NIH-style (label, x, y, w, h) in pixels.
"""

import cv2
import numpy as np

from tfcxr.data.phantom_draw import blur, gauss, pixel_grid, smooth_noise


def draw_findings(findings, lungs, size, rng):
    """Finding layer (added intensity, float32 (S, S)) and NIH-style boxes [(label, x, y, w, h)].

    The caller multiplies the layer by the hard lung mask, so nothing leaks outside it.
    """
    layer = np.zeros((size, size), np.float32)
    boxes = []
    # A fixed order, not TARGETS order: all findings draw from one rng stream, so it fixes every seeded image.
    for name, draw in _DRAWERS:
        if name in findings:
            boxes += draw(layer, lungs, rng)
    return layer, boxes


def _add_mass(layer, lungs, rng):
    """Add (in place) one lobulated blob in a random lung; returns its box."""
    s = layer.shape[0]
    yy, xx = pixel_grid(s)
    radius = rng.uniform(0.045, 0.075) * s
    lung = lungs[rng.integers(0, 2)]
    x, y = _sample_point(rng, lung["mask"], 0.8 * radius)
    reach = int(np.ceil(1.6 * radius)) + 2  # the blob lies within 1.23 radius: draw in a window
    x0, x1 = max(0, int(x) - reach), min(s, int(x) + reach + 1)
    y0, y1 = max(0, int(y) - reach), min(s, int(y) + reach + 1)
    wy, wx = yy[y0:y1] - y, xx[:, x0:x1] - x
    angle = np.arctan2(wy, wx)
    lobes = 1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 6.3)) + 0.08 * np.sin(5 * angle + rng.uniform(0, 6.3))
    dist = np.sqrt(wx**2 + wy**2) / (radius * lobes)
    blob = np.clip(1 - dist**2, 0, 1) ** 0.4
    layer[y0:y1, x0:x1] += rng.uniform(0.24, 0.34) * blur(blob.astype(np.float32), 0.08 * radius)
    return [("Mass", x - radius, y - radius, 2 * radius, 2 * radius)]


def _add_nodules(layer, lungs, rng):
    """Add (in place) three to six small dots, each in a random lung; returns one box per dot."""
    s = layer.shape[0]
    yy, xx = pixel_grid(s)
    boxes = []
    for _ in range(int(rng.integers(3, 7))):
        radius = max(rng.uniform(0.018, 0.028) * s, 1.0)
        lung = lungs[rng.integers(0, 2)]
        x, y = _sample_point(rng, lung["mask"], 1.5 * radius)
        dot = gauss(xx, yy, x, y, radius)
        layer += rng.uniform(0.32, 0.42) * dot
        boxes.append(("Nodule", x - 1.5 * radius, y - 1.5 * radius, 3 * radius, 3 * radius))
    return boxes


def _add_fibrosis(layer, lungs, rng):
    """Add (in place) short thin lines in both lungs, mostly basal; no box (NIH has none for it)."""
    s = layer.shape[0]
    reticular = np.zeros((s, s), np.float32)
    thickness = max(1, int(round(s / 128)))  # survives downsampling to the classifier's input size
    for lung in lungs:
        count = int(rng.integers(50, 80))
        xs, ys = _sample_rows(rng, lung, 1 - rng.random(count) ** 1.8 * 0.85)  # mostly basal
        half = 0.5 * rng.uniform(0.02, 0.05, count) * s
        theta = rng.uniform(0, np.pi, count)
        dx, dy = half * np.cos(theta), half * np.sin(theta)
        ends = np.stack([xs - dx, ys - dy, xs + dx, ys + dy], axis=1).reshape(count, 2, 2)
        cv2.polylines(reticular, list(np.round(ends * 16).astype(np.int32)), False, 1.0, thickness, cv2.LINE_AA, 4)
    layer += rng.uniform(0.11, 0.15) * reticular
    return []


def _add_edema(layer, lungs, rng):
    """Add (in place) a perihilar haze over both lungs and Kerley B lines at the bases; no box."""
    s = layer.shape[0]
    yy, xx = pixel_grid(s)
    haze = np.zeros((s, s), np.float32)
    for lung in lungs:
        hx, hy = lung["hilum"]
        haze += gauss(xx, yy, hx, hy, 0.16 * s)
    haze = 0.5 * np.minimum(haze, 1.0) + 0.5  # diffuse, strongest perihilar
    haze *= 1 + 0.25 * smooth_noise(rng, s, 10)
    layer += rng.uniform(0.09, 0.14) * haze
    kerley = np.zeros((s, s), np.float32)
    for lung in lungs:
        x0, y0, x1, y1 = lung["box"]
        lateral = x0 if lung is lungs[0] else x1
        inward = 1 if lung is lungs[0] else -1
        for _ in range(int(rng.integers(3, 7))):
            y = y0 + rng.uniform(0.6, 0.9) * (y1 - y0)
            length = rng.uniform(0.03, 0.05) * s
            cv2.line(
                kerley,
                (int(lateral * 16), int(y * 16)),
                (int((lateral + inward * length) * 16), int(y * 16)),
                1.0, max(1, int(round(s / 300))), cv2.LINE_AA, 4,
            )
    layer += 0.08 * kerley
    return []


def _add_pneumonia(layer, lungs, rng):
    """Add (in place) one patchy haze in an upper or lower zone of a random lung; returns its box."""
    s = layer.shape[0]
    yy, xx = pixel_grid(s)
    lung = lungs[rng.integers(0, 2)]
    zone = rng.uniform(0.2, 0.4) if rng.random() < 0.35 else rng.uniform(0.6, 0.85)
    xs, ys = _sample_rows(rng, lung, np.array([zone]))
    x, y = float(xs[0]), float(ys[0])
    radius = rng.uniform(0.08, 0.12) * s
    envelope = gauss(xx, yy, x, y, radius)
    patches = np.clip(0.6 + 0.6 * smooth_noise(rng, s, 20), 0, 1.5)
    layer += rng.uniform(0.22, 0.32) * envelope * patches
    return [("Pneumonia", x - radius, y - radius, 2 * radius, 2 * radius)]


_DRAWERS = (
    ("Mass", _add_mass),
    ("Nodule", _add_nodules),
    ("Fibrosis", _add_fibrosis),
    ("Edema", _add_edema),
    ("Pneumonia", _add_pneumonia),
)


def _sample_point(rng, lung_mask, min_depth):
    """Random pixel (x, y) of a mask, preferring pixels at least `min_depth` px inside it."""
    depth = cv2.distanceTransform(lung_mask, cv2.DIST_L2, 3)
    ys, xs = np.nonzero(depth >= min(min_depth, depth.max()))
    pick = rng.integers(0, xs.size)
    return float(xs[pick]), float(ys[pick])


def _sample_rows(rng, lung, v):
    """Random lung points at relative heights `v` (array in [0, 1]) of the lung's box: (xs, ys) float arrays."""
    mask = lung["mask"].astype(bool)
    x0, y0, x1, y1 = lung["box"]
    valid = np.flatnonzero(mask.any(axis=1))
    rows = np.clip(np.round(y0 + v * (y1 - 1 - y0)).astype(int), valid[0], valid[-1])
    rows = valid[np.minimum(np.searchsorted(valid, rows), valid.size - 1)]  # rows that hold lung pixels
    first = mask.argmax(axis=1)
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
    xs = first[rows] + rng.random(rows.size) * (last[rows] - first[rows])
    return xs, rows.astype(float)
