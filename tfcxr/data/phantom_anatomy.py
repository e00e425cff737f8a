"""The finding-free phantom of one patient: body, lungs and heart, mediastinum and spine, ribs and clavicles.

A patient's anatomy is drawn once from its own seeds (`patient_anatomy` for the shape parameters, a second
stream for the vessel texture) and shared by all of that patient's follow-ups, which `shift_anatomy` moves by a
few whole pixels. The lung masks are pixel-exact ground truth: each lung is a jittered lung-shaped polygon with
the heart cut out of it.

Intensities are on a [0, 1] scale, bright = attenuating. Every array is (S, S) for an image of size S.
"""

import dataclasses
import functools

import cv2
import numpy as np

from tfcxr.data.phantom_draw import blur, chaikin, fill_polygon, gauss, pixel_grid, polyline_points, smooth_noise

# Right lung (image left) outline in a unit box: u from lateral (0) to medial (1),
# v from apex (0) to costophrenic angle (1). Clockwise from the apex.
_LUNG_TEMPLATE = np.array(
    [
        (0.62, 0.00), (0.38, 0.04), (0.18, 0.17), (0.07, 0.40), (0.01, 0.70), (0.00, 1.00),
        (0.30, 0.93), (0.58, 0.86), (0.86, 0.84), (0.97, 0.66), (0.92, 0.42), (0.90, 0.18),
        (0.80, 0.04),
    ],
    dtype=np.float64,
)


def patient_anatomy(seed, patient_id):
    """Per-patient anatomy parameters (shared by all follow-ups), in units of the image size."""
    rng = np.random.default_rng([seed, 1, patient_id])
    return {
        "cx": 0.5 + rng.normal(0, 0.015),
        "top": rng.uniform(0.10, 0.16),
        "bottom": rng.uniform(0.74, 0.82),
        "lung_width": rng.uniform(0.27, 0.32),
        "gap": rng.uniform(0.08, 0.11),
        "right_raise": rng.uniform(0.0, 0.04),
        "jitter": rng.normal(0, 0.025, size=(2,) + _LUNG_TEMPLATE.shape),
        "heart_scale": rng.uniform(0.9, 1.12),
        "heart_shift": rng.normal(0, 0.01, size=2),
        "body_width": rng.uniform(0.44, 0.5),
        "lung_level": rng.uniform(0.18, 0.26),
        "tissue_level": rng.uniform(0.5, 0.6),
        "rib_spacing": rng.uniform(0.070, 0.085),
        "rib_phase": rng.uniform(0, 1),
        "gamma": rng.uniform(0.85, 1.15),
        "gastric_bubble": rng.random() < 0.4,
    }


@dataclasses.dataclass(frozen=True)
class _Thorax:
    """Where a patient's thorax lies, in pixels of an (S, S) image."""

    size: int
    cx: float  # midline x
    top: float  # lung apices y
    bottom: float  # left costophrenic angle y (the right lung's is raised)
    gap: float  # mediastinum width between the lungs
    width: float  # width of one lung

    @property
    def height(self):
        return self.bottom - self.top


@functools.lru_cache(maxsize=4)
def draw_anatomy(seed, patient_id, view, size):
    """Draw a patient's finding-free phantom (cached: follow-ups reuse it, then shift it).

    Returns (read-only arrays):
        base: float32 (S, S) intensity, roughly [0, 1] (bright = attenuating).
        lung_mask: uint8 (S, S) in {0, 1}, union of both lungs.
        lungs: tuple of two dicts (per lung: mask, box (x0, y0, x1, y1) in pixels, hilum (x, y)),
            right lung (image left) first.
    """
    a = patient_anatomy(seed, patient_id)
    rng = np.random.default_rng([seed, 2, patient_id])
    s = size
    thorax = _Thorax(s, a["cx"] * s, a["top"] * s, a["bottom"] * s, a["gap"] * s, a["lung_width"] * s)
    lungs, union, heart = _lungs_and_heart(a, thorax, view)
    yy, xx = pixel_grid(s)
    # Each step adds to `base` in the original order: the pixels are pinned by a test.
    base, body_f = _body(a, thorax, yy, xx)
    _add_mediastinum(base, body_f, heart, thorax, yy, xx)
    base, lung_soft = _add_lung_fields(base, body_f, union, lungs, a, thorax, rng, yy, xx)
    _add_ribs(base, body_f, lung_soft, a, thorax, yy, xx)
    base = blur(base, 0.003 * s).astype(np.float32)
    for array in [base, union] + [lung["mask"] for lung in lungs]:
        array.setflags(write=False)
    return base, union, tuple(lungs)


def _lungs_and_heart(a, thorax, view):
    """Both lung masks with the heart cut out, their union and the heart.

    Returns:
        lungs: list of two dicts (mask uint8 (S, S), box (x0, y0, x1, y1), hilum (x, y)), right lung first.
        union: uint8 (S, S) in {0, 1}.
        heart: uint8 (S, S) in {0, 1}, a tilted ellipse low in the mediastinum, bulging to the patient's left.
    """
    s, cx, top, bottom = thorax.size, thorax.cx, thorax.top, thorax.bottom
    shape = (s, s)
    lungs = []
    union = np.zeros(shape, np.uint8)
    for side in (0, 1):  # 0: right lung (image left), 1: left lung (image right)
        template = _LUNG_TEMPLATE + a["jitter"][side]
        lung_bottom = bottom - (a["right_raise"] * s if side == 0 else 0.0)
        if side == 0:
            x = (cx - thorax.gap / 2 - thorax.width) + template[:, 0] * thorax.width
        else:
            x = (cx + thorax.gap / 2 + thorax.width) - template[:, 0] * thorax.width
        y = top + template[:, 1] * (lung_bottom - top)
        mask = fill_polygon(shape, chaikin(np.stack([x, y], axis=1)))
        lungs.append({"mask": mask, "box": (x.min(), top, x.max(), lung_bottom)})
        union |= mask

    heart_scale = a["heart_scale"] * (1.12 if view == "AP" else 1.0)
    heart_center = (cx + (0.05 + a["heart_shift"][0]) * s, top + (0.74 + a["heart_shift"][1]) * thorax.height)
    heart_axes = (0.155 * s * heart_scale, 0.11 * s * heart_scale)
    heart = np.zeros(shape, np.uint8)
    cv2.ellipse(
        heart,
        (int(round(heart_center[0] * 16)), int(round(heart_center[1] * 16))),
        (int(round(heart_axes[0] * 16)), int(round(heart_axes[1] * 16))),
        -30, 0, 360, 1, -1, cv2.LINE_8, 4,
    )
    union &= 1 - heart
    for lung in lungs:
        lung["mask"] &= 1 - heart
        bx, by, bw, bh = cv2.boundingRect(lung["mask"])
        if bw == 0:
            raise RuntimeError("synthetic lung vanished; anatomy parameters out of range")
        lung["box"] = (bx, by, bx + bw, by + bh)
        x0, y0, x1, y1 = lung["box"]
        medial = x1 if lung is lungs[0] else x0
        lung["hilum"] = (medial + (-0.18 if lung is lungs[0] else 0.18) * (x1 - x0), y0 + 0.45 * (y1 - y0))
    return lungs, union, heart


def _body(a, thorax, yy, xx):
    """A rounded torso (superellipse) with the neck on top: base intensity (S, S) and body weight body_f (S, S)."""
    s, cx = thorax.size, thorax.cx
    body_w = a["body_width"] * s
    torso = (np.abs(xx - cx) / body_w) ** 3 + (np.abs(yy - 0.66 * s) / (0.6 * s)) ** 3  # 1 on the outline
    neck = np.clip((0.08 * s - np.abs(xx - cx)) / (0.02 * s), 0, 1) * (yy < thorax.top)
    body_f = np.maximum(np.clip((1 - torso) * 8, 0, 1), neck)  # soft edge, no blur needed
    lateral = np.clip(np.abs(xx - cx) / body_w, 0, 1)
    abdomen = 0.06 * np.clip((yy - thorax.bottom) / (0.1 * s), 0, 1)  # (S, 1): brighter below the diaphragm
    base = 0.05 + body_f * (a["tissue_level"] + 0.1 * lateral**6 + abdomen)
    return base, body_f


def _add_mediastinum(base, body_f, heart, thorax, yy, xx):
    """Add (in place) the spine and mediastinum as bright vertical bands, the heart and the aortic knob."""
    s, cx, top = thorax.size, thorax.cx, thorax.top
    spine = np.exp(-(((xx - cx) / (0.035 * s)) ** 2) * 2.0)
    vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * yy / (0.05 * s))
    base += body_f * spine * (0.08 + 0.04 * vertebrae)
    mediastinum = np.exp(-(((xx - cx) / (thorax.gap * 0.9)) ** 2))
    base += body_f * mediastinum * 0.07 * (yy > top - 0.05 * s)
    base += blur(heart.astype(np.float32), 0.015 * s) * 0.08
    knob = gauss(xx, yy, cx + 0.045 * s, top + 0.22 * thorax.height, 0.03 * s)
    base += knob * 0.06


def _add_lung_fields(base, body_f, union, lungs, a, thorax, rng, yy, xx):
    """Paint the lungs dark, with vessel texture, brighter hila and apices, and the gastric bubble.

    Returns:
        base: the new intensity (S, S).
        lung_soft: float32 (S, S), the slightly blurred lung union used as the blend weight.
    """
    s, top = thorax.size, thorax.top
    lung_soft = blur(union.astype(np.float32), 0.008 * s)
    vessels = 0.02 * smooth_noise(rng, s, 24) + 0.015 * smooth_noise(rng, s, 48)
    hila = np.zeros((s, s), np.float32)
    for lung in lungs:
        hx, hy = lung["hilum"]
        hila += gauss(xx, yy, hx, hy, 0.06 * s)
    apex = np.clip(1 - (yy - top) / (0.25 * thorax.height), 0, 1) ** 2
    lung_value = a["lung_level"] + vessels + 0.09 * hila + 0.08 * apex
    base = base * (1 - lung_soft) + lung_soft * lung_value
    if a["gastric_bubble"]:
        bubble = gauss(xx, yy, thorax.cx + 0.17 * s, thorax.bottom + 0.06 * s, 0.05 * s, 0.03 * s)
        base -= 0.2 * bubble * body_f
    return base, lung_soft


def _add_ribs(base, body_f, lung_soft, a, thorax, yy, xx):
    """Add (in place) ribs (posterior arcs bright, anterior arcs faint) and clavicles, over the thorax only."""
    s, cx, top = thorax.size, thorax.cx, thorax.top
    ribs = np.zeros((s, s), np.float32)
    thickness = max(1, int(round(0.016 * s)))
    spacing = a["rib_spacing"] * s
    reach = thorax.gap / 2 + thorax.width + 0.03 * s
    t = np.linspace(0.0, 1.0, 24)
    for k in range(11):
        y_k = top - 0.03 * s + (k + a["rib_phase"] * 0.3) * spacing
        for side in (-1, 1):
            xs = cx + side * (0.02 * s + t * reach)
            ys = y_k - 0.03 * s * np.sin(np.pi * t * 0.8) + 0.17 * s * t**2.2
            cv2.polylines(ribs, [polyline_points(xs, ys)], False, 1.0, thickness, cv2.LINE_AA, 4)
            if k < 6:  # anterior rib: from the lateral wall down towards the sternum
                xs = cx + side * (reach - t * 0.7 * reach)
                ys = y_k + 0.06 * s + 0.12 * s * t - 0.04 * s * t**2
                cv2.polylines(ribs, [polyline_points(xs, ys)], False, 0.45, thickness, cv2.LINE_AA, 4)
    inside = ((xx - cx) / reach) ** 2 + ((yy - 0.5 * (top + thorax.bottom)) / (0.5 * thorax.height + 0.03 * s)) ** 2
    ribs *= np.clip((1 - inside) * 4, 0, 1)
    for side in (-1, 1):  # clavicles
        xs = cx + side * (0.04 * s + t * 0.28 * s)
        ys = top - 0.01 * s - 0.035 * s * t + 0.015 * s * np.sin(np.pi * t)
        cv2.polylines(ribs, [polyline_points(xs, ys)], False, 1.4, int(round(thickness * 1.4)), cv2.LINE_AA, 4)
    ribs = blur(ribs, 0.004 * s)
    base += ribs * body_f * (0.03 + 0.07 * lung_soft)


def shift_anatomy(base, union, lungs, dx, dy):
    """Translate the phantom by whole pixels (dx, dy); masks stay exact 0/1."""
    if dx == 0 and dy == 0:
        return base, union, lungs
    size = base.shape[1], base.shape[0]
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])

    def move(array, border):
        return cv2.warpAffine(array, matrix, size, flags=cv2.INTER_NEAREST, borderMode=border)

    moved = []
    for lung in lungs:
        x0, y0, x1, y1 = lung["box"]
        hx, hy = lung["hilum"]
        moved.append({
            "mask": move(lung["mask"], cv2.BORDER_CONSTANT),
            "box": (x0 + dx, y0 + dy, x1 + dx, y1 + dy),
            "hilum": (hx + dx, hy + dy),
        })
    return move(base, cv2.BORDER_REPLICATE), move(union, cv2.BORDER_CONSTANT), tuple(moved)
