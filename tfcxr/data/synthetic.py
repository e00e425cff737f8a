"""Seeded synthetic chest X-rays with exact lung masks: tfcxr's demo and test data.

Each image is a phantom radiograph: body outline, two dark lungs (a jittered
lung-shaped polygon per side, so size, shape and position vary per patient),
bright mediastinum, spine and heart, ribs and clavicles, vessel texture and
noise. The lung mask is the exact union of both lung polygons (the heart is cut
out of them), so it is pixel-exact ground truth.

Findings are drawn INSIDE the lung mask only (the finding layer is multiplied by
the hard mask), so masking to the lungs can never remove a label's signal:

- Mass: one large bright lobulated blob.
- Nodule: two to five small bright dots.
- Fibrosis: reticular texture (many short thin lines), mostly basal and peripheral.
- Edema: diffuse bilateral perihilar haze with a few Kerley B lines at the bases.
- Pneumonia: one focal patchy haze in one zone (lobe) of one lung.

Label-unrelated distractors (ring-shaped ECG electrodes, wires and tubes, a
side marker) are drawn OUTSIDE the lungs only (at least one pixel away), so
`original` images carry bright nuisance context that tight masking removes and
loose masking partly keeps. This makes the demo favour masking by design: read
mask-mode comparisons on synthetic data as a pipeline check, not as evidence.

Labels are independent Bernoulli draws per image and target (default
prevalence 0.2, so about a third of images are "No Finding"); a few images also
carry a non-target NIH finding (not drawn) to exercise curation. Patients have
one or more follow-up images sharing their anatomy, so patient-level splits matter.

Layout written by `generate` (the NIH-like contract)::

    out_dir/images/<image_id>.png   uint8 gray (S, S)
    out_dir/masks/<image_id>.png    uint8 0/255 union of both lungs, (S, S)
    out_dir/Data_Entry_2017.csv     NIH columns, '|'-separated Finding Labels
    out_dir/BBox_List_2017.csv      NIH-style boxes for Mass, Nodule and Pneumonia
    out_dir/config.json             the config; written last, marks a complete set

CLI::

    python -m tfcxr.data.synthetic --out demo_data/synthetic --num-images 600 --image-size 256 --seed 0
"""

import argparse
import dataclasses
import functools
import json
import logging
import pathlib
import time

import cv2
import numpy as np
import pandas as pd

from tfcxr.atomic import write_text_atomic
from tfcxr.data.io import write_png_atomic
from tfcxr.labels import NIH_FINDINGS, NO_FINDING, TARGETS

logger = logging.getLogger(__name__)

DEFAULT_DEMO_DIR = pathlib.Path("demo_data") / "synthetic"
METADATA_NAME = "Data_Entry_2017.csv"
BBOX_NAME = "BBox_List_2017.csv"
CONFIG_NAME = "config.json"
# Bump when the drawing changes, so cached demo sets are regenerated.
GENERATOR_VERSION = 4

_OTHER_FINDINGS = tuple(name for name in NIH_FINDINGS if name not in TARGETS)
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


@dataclasses.dataclass
class SyntheticConfig:
    """How to generate a synthetic NIH-like set.

    Attributes:
        num_images: number of images (rows of the CSV).
        image_size: S, images and masks are (S, S) uint8.
        num_patients: patients the images are spread over (each has at least one
            image); `None` means `max(1, num_images // 3)`.
        seed: master seed; the same config gives byte-identical files.
        prevalence: probability that an image has a given target (independent per target).
        other_finding_rate: probability that an image also lists one non-target
            NIH finding (not drawn), to exercise curation.
        ap_fraction: fraction of AP views (larger heart, lower contrast); the rest are PA.
        distractors: draw label-unrelated electrodes, wires and a marker outside the lungs.
        noise_std: std of the pixel noise on the [0, 1] intensity scale.
    """

    num_images: int = 600
    image_size: int = 256
    num_patients: int = None
    seed: int = 0
    prevalence: float = 0.2
    other_finding_rate: float = 0.05
    ap_fraction: float = 0.4
    distractors: bool = True
    noise_std: float = 0.02

    def __post_init__(self):
        if int(self.num_images) < 1:
            raise ValueError(f"`num_images` must be >= 1. Received: num_images={self.num_images}")
        if not 32 <= int(self.image_size) <= 4096:
            raise ValueError(f"`image_size` must be in [32, 4096]. Received: image_size={self.image_size}")
        if self.num_patients is not None and not 1 <= int(self.num_patients) <= int(self.num_images):
            raise ValueError(
                f"`num_patients` must be in [1, num_images={self.num_images}] or None. "
                f"Received: num_patients={self.num_patients}"
            )
        for name in ("prevalence", "other_finding_rate", "ap_fraction"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1]. Received: {name}={value}")
        if float(self.noise_std) < 0:
            raise ValueError(f"`noise_std` must be >= 0. Received: noise_std={self.noise_std}")

    @property
    def resolved_num_patients(self):
        """Number of patients actually used."""
        if self.num_patients is None:
            return max(1, int(self.num_images) // 3)
        return int(self.num_patients)

    def to_dict(self):
        """JSON-able dict of the config plus the generator version."""
        return {**dataclasses.asdict(self), "generator_version": GENERATOR_VERSION}


@dataclasses.dataclass(frozen=True)
class Case:
    """One synthetic image: its metadata and the seeds that draw it.

    `findings` are the targets drawn inside the lungs (TARGETS order);
    `other_findings` are listed in the CSV only.
    """

    index: int
    image_id: str
    patient_id: int
    follow_up: int
    age: int
    sex: str
    view: str
    findings: tuple
    other_findings: tuple = ()

    @property
    def finding_labels(self):
        """NIH `Finding Labels` string, e.g. `"Mass|Nodule"` or `"No Finding"`."""
        names = sorted(self.findings + self.other_findings)
        return "|".join(names) if names else NO_FINDING


def sample_cases(config):
    """Draw the metadata of every image (patients, follow-ups, views, labels).

    Returns:
        list of `Case`, sorted by image id (patient, then follow-up).
    """
    rng = np.random.default_rng([config.seed, 0])
    num_images = int(config.num_images)
    num_patients = config.resolved_num_patients
    # Every patient gets one image; the rest are spread with a skew, as in NIH.
    weights = rng.gamma(0.7, size=num_patients)
    extra = rng.multinomial(num_images - num_patients, weights / weights.sum())
    counts = 1 + extra
    ages = rng.integers(18, 86, size=num_patients)
    sexes = rng.choice(np.array(["M", "F"]), size=num_patients)
    labels = rng.random((num_images, len(TARGETS))) < config.prevalence
    views = np.where(rng.random(num_images) < config.ap_fraction, "AP", "PA")
    has_other = rng.random(num_images) < config.other_finding_rate
    other_pick = rng.integers(0, len(_OTHER_FINDINGS), size=num_images)
    age_steps = rng.integers(0, 2, size=num_images)
    cases = []
    index = 0
    for patient in range(num_patients):
        age = int(ages[patient])
        for follow_up in range(int(counts[patient])):
            age = min(age + int(age_steps[index]) * (follow_up > 0), 95)
            cases.append(
                Case(
                    index=index,
                    image_id=f"{patient + 1:08d}_{follow_up:03d}.png",
                    patient_id=patient + 1,
                    follow_up=follow_up,
                    age=age,
                    sex=str(sexes[patient]),
                    view=str(views[index]),
                    findings=tuple(t for t, on in zip(TARGETS, labels[index]) if on),
                    other_findings=(_OTHER_FINDINGS[other_pick[index]],) if has_other[index] else (),
                )
            )
            index += 1
    return cases


# ----------------------------------------------------------------------------- drawing


def _chaikin(points, iterations=3):
    """Corner-cutting smoothing of a closed polygon (n, 2) -> (n * 2**iterations, 2)."""
    for _ in range(iterations):
        nxt = np.roll(points, -1, axis=0)
        points = np.stack([0.75 * points + 0.25 * nxt, 0.25 * points + 0.75 * nxt], axis=1).reshape(-1, 2)
    return points


def _fill(shape, polygon):
    """Hard polygon mask: uint8 (H, W) in {0, 1} from float pixel points (n, 2)."""
    out = np.zeros(shape, np.uint8)
    cv2.fillPoly(out, [np.round(polygon * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return out


def _blur(array, sigma):
    """Gaussian blur with a sigma in pixels (no-op for tiny sigma)."""
    if sigma < 0.3:
        return array
    return cv2.GaussianBlur(array, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT)


def _grid(size):
    """Broadcastable pixel coordinates: yy float32 (S, 1), xx float32 (1, S)."""
    axis = np.arange(size, dtype=np.float32)
    return axis[:, None], axis[None, :]


def _gauss(xx, yy, x, y, rx, ry=None):
    """Separable Gaussian bump exp(-((xx-x)/rx)^2 - ((yy-y)/ry)^2): float32 (S, S)."""
    ry = rx if ry is None else ry
    return np.exp(-(((yy - y) / ry) ** 2)) * np.exp(-(((xx - x) / rx) ** 2))


def _smooth_noise(rng, size, cells):
    """Low-frequency noise: float32 (size, size), roughly N(0, 1), `cells` blobs across."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _patient_anatomy(seed, patient_id):
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


@functools.lru_cache(maxsize=4)
def _draw_anatomy(seed, patient_id, view, size):
    """Draw a patient's finding-free phantom (cached: follow-ups reuse it, then shift it).

    Returns (read-only arrays):
        base: float32 (S, S) intensity, roughly [0, 1] (bright = attenuating).
        lung_mask: uint8 (S, S) in {0, 1}, union of both lungs.
        lungs: tuple of two dicts (per lung: mask, box (x0, y0, x1, y1) in pixels, hilum (x, y)),
            right lung (image left) first.
    """
    a = _patient_anatomy(seed, patient_id)
    rng = np.random.default_rng([seed, 2, patient_id])
    s = size
    shape = (s, s)
    cx = a["cx"] * s
    top = a["top"] * s
    bottom = a["bottom"] * s
    gap = a["gap"] * s
    width = a["lung_width"] * s
    heart_scale = a["heart_scale"] * (1.12 if view == "AP" else 1.0)

    lungs = []
    union = np.zeros(shape, np.uint8)
    for side in (0, 1):  # 0: right lung (image left), 1: left lung (image right)
        template = _LUNG_TEMPLATE + a["jitter"][side]
        lung_bottom = bottom - (a["right_raise"] * s if side == 0 else 0.0)
        if side == 0:
            x = (cx - gap / 2 - width) + template[:, 0] * width
        else:
            x = (cx + gap / 2 + width) - template[:, 0] * width
        y = top + template[:, 1] * (lung_bottom - top)
        mask = _fill(shape, _chaikin(np.stack([x, y], axis=1)))
        lungs.append({"mask": mask, "box": (x.min(), top, x.max(), lung_bottom)})
        union |= mask

    # Heart: a tilted ellipse low in the mediastinum, bulging to the patient's left.
    height = bottom - top
    heart_center = (cx + (0.05 + a["heart_shift"][0]) * s, top + (0.74 + a["heart_shift"][1]) * height)
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

    yy, xx = _grid(s)
    # Body: a rounded torso (superellipse) with the neck on top.
    body_w = a["body_width"] * s
    torso = (np.abs(xx - cx) / body_w) ** 3 + (np.abs(yy - 0.66 * s) / (0.6 * s)) ** 3  # 1 on the outline
    neck = np.clip((0.08 * s - np.abs(xx - cx)) / (0.02 * s), 0, 1) * (yy < top)
    body_f = np.maximum(np.clip((1 - torso) * 8, 0, 1), neck)  # soft edge, no blur needed
    lateral = np.clip(np.abs(xx - cx) / body_w, 0, 1)
    abdomen = 0.06 * np.clip((yy - bottom) / (0.1 * s), 0, 1)  # (S, 1): brighter below the diaphragm
    base = 0.05 + body_f * (a["tissue_level"] + 0.1 * lateral**6 + abdomen)

    # Mediastinum and spine: bright vertical bands; heart low and to the patient's left.
    spine = np.exp(-(((xx - cx) / (0.035 * s)) ** 2) * 2.0)
    vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * yy / (0.05 * s))
    base += body_f * spine * (0.08 + 0.04 * vertebrae)
    mediastinum = np.exp(-(((xx - cx) / (gap * 0.9)) ** 2))
    base += body_f * mediastinum * 0.07 * (yy > top - 0.05 * s)
    base += _blur(heart.astype(np.float32), 0.015 * s) * 0.08
    knob = _gauss(xx, yy, cx + 0.045 * s, top + 0.22 * height, 0.03 * s)
    base += knob * 0.06

    # Lungs: dark, with vessel texture, brighter hila and apices.
    lung_soft = _blur(union.astype(np.float32), 0.008 * s)
    vessels = 0.02 * _smooth_noise(rng, s, 24) + 0.015 * _smooth_noise(rng, s, 48)
    hila = np.zeros(shape, np.float32)
    for lung in lungs:
        hx, hy = lung["hilum"]
        hila += _gauss(xx, yy, hx, hy, 0.06 * s)
    apex = np.clip(1 - (yy - top) / (0.25 * height), 0, 1) ** 2
    lung_value = a["lung_level"] + vessels + 0.09 * hila + 0.08 * apex
    base = base * (1 - lung_soft) + lung_soft * lung_value
    if a["gastric_bubble"]:
        bubble = _gauss(xx, yy, cx + 0.17 * s, bottom + 0.06 * s, 0.05 * s, 0.03 * s)
        base -= 0.2 * bubble * body_f

    # Ribs (posterior arcs bright, anterior arcs faint) and clavicles, over the thorax only.
    ribs = np.zeros(shape, np.float32)
    thickness = max(1, int(round(0.016 * s)))
    spacing = a["rib_spacing"] * s
    reach = gap / 2 + width + 0.03 * s
    t = np.linspace(0.0, 1.0, 24)
    for k in range(11):
        y_k = top - 0.03 * s + (k + a["rib_phase"] * 0.3) * spacing
        for side in (-1, 1):
            xs = cx + side * (0.02 * s + t * reach)
            ys = y_k - 0.03 * s * np.sin(np.pi * t * 0.8) + 0.17 * s * t**2.2
            pts = np.round(np.stack([xs, ys], axis=1) * 16).astype(np.int32)
            cv2.polylines(ribs, [pts], False, 1.0, thickness, cv2.LINE_AA, 4)
            if k < 6:  # anterior rib: from the lateral wall down towards the sternum
                xs = cx + side * (reach - t * 0.7 * reach)
                ys = y_k + 0.06 * s + 0.12 * s * t - 0.04 * s * t**2
                pts = np.round(np.stack([xs, ys], axis=1) * 16).astype(np.int32)
                cv2.polylines(ribs, [pts], False, 0.45, thickness, cv2.LINE_AA, 4)
    thorax = ((xx - cx) / reach) ** 2 + ((yy - 0.5 * (top + bottom)) / (0.5 * height + 0.03 * s)) ** 2
    ribs *= np.clip((1 - thorax) * 4, 0, 1)
    for side in (-1, 1):
        xs = cx + side * (0.04 * s + t * 0.28 * s)
        ys = top - 0.01 * s - 0.035 * s * t + 0.015 * s * np.sin(np.pi * t)
        pts = np.round(np.stack([xs, ys], axis=1) * 16).astype(np.int32)
        cv2.polylines(ribs, [pts], False, 1.4, int(round(thickness * 1.4)), cv2.LINE_AA, 4)
    ribs = _blur(ribs, 0.004 * s)
    base += ribs * body_f * (0.03 + 0.07 * lung_soft)

    base = _blur(base, 0.003 * s).astype(np.float32)
    for array in [base, union] + [lung["mask"] for lung in lungs]:
        array.setflags(write=False)
    return base, union, tuple(lungs)


def _shift_anatomy(base, union, lungs, dx, dy):
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


def _sample_point(rng, lung_mask, min_depth):
    """Random pixel (x, y) of a mask, preferring pixels at least `min_depth` px inside it."""
    depth = cv2.distanceTransform(lung_mask, cv2.DIST_L2, 3)
    ys, xs = np.nonzero(depth >= min(min_depth, depth.max()))
    pick = rng.integers(0, xs.size)
    return float(xs[pick]), float(ys[pick])


def _draw_findings(findings, lungs, union, size, rng):
    """Finding layer (added intensity, float32 (S, S)) and NIH-style boxes [(label, x, y, w, h)].

    The caller multiplies the layer by the hard lung mask, so nothing leaks outside it.
    """
    s = size
    layer = np.zeros((s, s), np.float32)
    boxes = []
    yy, xx = _grid(s)
    if "Mass" in findings:
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
        layer[y0:y1, x0:x1] += rng.uniform(0.24, 0.34) * _blur(blob.astype(np.float32), 0.08 * radius)
        boxes.append(("Mass", x - radius, y - radius, 2 * radius, 2 * radius))
    if "Nodule" in findings:
        for _ in range(int(rng.integers(3, 7))):
            radius = max(rng.uniform(0.018, 0.028) * s, 1.0)
            lung = lungs[rng.integers(0, 2)]
            x, y = _sample_point(rng, lung["mask"], 1.5 * radius)
            dot = _gauss(xx, yy, x, y, radius)
            layer += rng.uniform(0.32, 0.42) * dot
            boxes.append(("Nodule", x - 1.5 * radius, y - 1.5 * radius, 3 * radius, 3 * radius))
    if "Fibrosis" in findings:
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
    if "Edema" in findings:
        haze = np.zeros((s, s), np.float32)
        for lung in lungs:
            hx, hy = lung["hilum"]
            haze += _gauss(xx, yy, hx, hy, 0.16 * s)
        haze = 0.5 * np.minimum(haze, 1.0) + 0.5  # diffuse, strongest perihilar
        haze *= 1 + 0.25 * _smooth_noise(rng, s, 10)
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
    if "Pneumonia" in findings:
        lung = lungs[rng.integers(0, 2)]
        zone = rng.uniform(0.2, 0.4) if rng.random() < 0.35 else rng.uniform(0.6, 0.85)
        xs, ys = _sample_rows(rng, lung, np.array([zone]))
        x, y = float(xs[0]), float(ys[0])
        radius = rng.uniform(0.08, 0.12) * s
        envelope = _gauss(xx, yy, x, y, radius)
        patches = np.clip(0.6 + 0.6 * _smooth_noise(rng, s, 20), 0, 1.5)
        layer += rng.uniform(0.22, 0.32) * envelope * patches
        boxes.append(("Pneumonia", x - radius, y - radius, 2 * radius, 2 * radius))
    return layer, boxes


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


def _draw_distractors(view, union, size, rng):
    """Label-unrelated bright context outside the lungs: electrodes, wires, side marker. float32 (S, S)."""
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
        pts = np.round(np.stack([xs, ys], axis=1) * 16).astype(np.int32)
        cv2.polylines(layer, [pts], False, 0.25, max(1, int(round(0.008 * s))), cv2.LINE_AA, 4)
    letter = "R" if view == "PA" else "L"
    corner = (int(0.04 * s), int(0.12 * s)) if rng.random() < 0.5 else (int(0.88 * s), int(0.12 * s))
    text = np.zeros((s, s), np.uint8)  # putText draws on 8-bit images only
    cv2.putText(text, letter, corner, cv2.FONT_HERSHEY_SIMPLEX, 0.0025 * s, 255, max(1, int(0.006 * s)), cv2.LINE_AA)
    layer += text.astype(np.float32) * (0.8 / 255)
    outside = 1.0 - cv2.dilate(union, np.ones((3, 3), np.uint8)).astype(np.float32)
    return layer * outside


def render_case(case, config, findings=None, return_boxes=False):
    """Draw one synthetic radiograph and its exact lung mask.

    Args:
        case: a `Case` from `sample_cases(config)`.
        config: the `SyntheticConfig` (image size, seed, noise, distractors).
        findings: override `case.findings` (e.g. `()` for the same image without
            findings: identical pixels outside the lung mask).
        return_boxes: also return NIH-style boxes.

    Returns:
        image: uint8 (S, S) gray radiograph.
        mask: bool (S, S), True inside either lung.
        boxes (only with `return_boxes`): list of (label, x, y, w, h) in pixels.
    """
    size = int(config.image_size)
    findings = case.findings if findings is None else tuple(findings)
    # Follow-ups share the patient's anatomy, shifted by a few pixels (positioning).
    base, union, lungs = _draw_anatomy(int(config.seed), case.patient_id, case.view, size)
    shift_rng = np.random.default_rng([config.seed, 6, case.index])
    reach = max(1, round(0.015 * size))
    base, union, lungs = _shift_anatomy(base, union, lungs, *shift_rng.integers(-reach, reach + 1, size=2))
    layer, boxes = _draw_findings(findings, lungs, union, size, np.random.default_rng([config.seed, 3, case.index]))
    image = base + layer * union
    if config.distractors:
        image += _draw_distractors(case.view, union, size, np.random.default_rng([config.seed, 4, case.index]))
    noise_rng = np.random.default_rng([config.seed, 5, case.index])
    image += config.noise_std * noise_rng.standard_normal((size, size), dtype=np.float32)
    # AP films: a little less contrast. Gamma through a lookup table (fast).
    contrast = 0.9 if case.view == "AP" else 1.0
    levels = np.linspace(0.0, 1.0, 4096) ** _patient_anatomy(int(config.seed), case.patient_id)["gamma"]
    lut = np.round(levels * 255).astype(np.uint8)
    image = lut[(np.clip(image * contrast, 0, 1) * 4095 + 0.5).astype(np.int32)]
    mask = union.astype(bool)
    if return_boxes:
        return image, mask, boxes
    return image, mask


def generate_arrays(config, cases=None):
    """Render a whole set in memory (tests, notebooks).

    Returns:
        images: uint8 (N, S, S); masks: bool (N, S, S);
        labels: float32 (N, len(TARGETS)) 0/1 in TARGETS order; cases: list of `Case`.
    """
    cases = sample_cases(config) if cases is None else cases
    size = int(config.image_size)
    images = np.empty((len(cases), size, size), np.uint8)
    masks = np.empty((len(cases), size, size), bool)
    for i, case in enumerate(cases):
        images[i], masks[i] = render_case(case, config)
    labels = np.array([[t in c.findings for t in TARGETS] for c in cases], np.float32).reshape(-1, len(TARGETS))
    return images, masks, labels, cases


def metadata_frame(cases, image_size):
    """NIH `Data_Entry_2017.csv` rows for the cases (same columns and header as NIH's v2020 file)."""
    spacing = round(0.143 * 2048 / image_size, 6)
    return pd.DataFrame(
        {
            "Image Index": [c.image_id for c in cases],
            "Finding Labels": [c.finding_labels for c in cases],
            "Follow-up #": [c.follow_up for c in cases],
            "Patient ID": [c.patient_id for c in cases],
            "Patient Age": [c.age for c in cases],
            "Patient Gender": [c.sex for c in cases],
            "View Position": [c.view for c in cases],
            "OriginalImage[Width": image_size,
            "Height]": image_size,
            "OriginalImagePixelSpacing[x": spacing,
            "y]": spacing,
        }
    )


def _is_complete(out_dir, config):
    """True when out_dir holds a full set generated with this exact config."""
    config_path = out_dir / CONFIG_NAME
    if not config_path.is_file():
        return False
    try:
        saved = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return False
    if saved != config.to_dict():
        return False
    try:
        ids = pd.read_csv(out_dir / METADATA_NAME, usecols=["Image Index"])["Image Index"]
    except (OSError, ValueError):
        return False
    return len(ids) == config.num_images and all(
        (out_dir / "images" / name).is_file() and (out_dir / "masks" / name).is_file() for name in ids
    )


def generate(out_dir=DEFAULT_DEMO_DIR, config=None, overwrite=False):
    """Write a synthetic NIH-like set (images/, masks/, Data_Entry_2017.csv, BBox_List_2017.csv, config.json).

    Idempotent: when `out_dir` already holds a complete set made with the same
    config (its `config.json`), nothing is redrawn. A different config redraws
    the set; files of the old set that the new one does not name are removed.

    Args:
        out_dir: destination folder (created). Default `demo_data/synthetic`.
        config: `SyntheticConfig`; default `SyntheticConfig()` (600 images at 256 px).
        overwrite: redraw even when a matching set exists.

    Returns:
        `pathlib.Path` of out_dir.
    """
    config = SyntheticConfig() if config is None else config
    out_dir = pathlib.Path(out_dir)
    if not overwrite and _is_complete(out_dir, config):
        logger.info("Reusing the synthetic set in %s (same config.json).", out_dir)
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / CONFIG_NAME
    old_ids = set()
    if (out_dir / METADATA_NAME).is_file():
        old_ids = set(pd.read_csv(out_dir / METADATA_NAME, usecols=["Image Index"])["Image Index"])
    config_path.unlink(missing_ok=True)  # the set is incomplete until config.json is back

    start = time.perf_counter()
    cases = sample_cases(config)
    box_rows = []
    for case in cases:
        image, mask, boxes = render_case(case, config, return_boxes=True)
        write_png_atomic(out_dir / "images" / case.image_id, image)
        write_png_atomic(out_dir / "masks" / case.image_id, mask.astype(np.uint8) * 255)
        box_rows += [(case.image_id, label, x, y, w, h) for label, x, y, w, h in boxes]
    for stale in old_ids - {c.image_id for c in cases}:
        for folder in ("images", "masks"):
            (out_dir / folder / stale).unlink(missing_ok=True)

    metadata_frame(cases, config.image_size).to_csv(out_dir / METADATA_NAME, index=False)
    pd.DataFrame(
        box_rows, columns=["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
    ).round(2).to_csv(out_dir / BBOX_NAME, index=False)
    write_text_atomic(config_path, json.dumps(config.to_dict(), indent=2, sort_keys=True))
    logger.info(
        "Wrote %d synthetic images (%d px, %d patients) to %s in %.1f s.",
        len(cases), config.image_size, config.resolved_num_patients, out_dir, time.perf_counter() - start,
    )
    return out_dir


def build_parser():
    """Argument parser of `python -m tfcxr.data.synthetic`."""
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(
        prog="python -m tfcxr.data.synthetic",
        description="Generate a seeded synthetic NIH-like chest X-ray set with exact lung masks.",
    )
    parser.add_argument("--out", default=str(DEFAULT_DEMO_DIR), help="output folder (default: %(default)s)")
    parser.add_argument("--num-images", type=int, default=defaults.num_images)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--num-patients", type=int, default=None, help="default: num_images // 3")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--prevalence", type=float, default=defaults.prevalence, help="per-target probability")
    parser.add_argument("--other-finding-rate", type=float, default=defaults.other_finding_rate)
    parser.add_argument("--ap-fraction", type=float, default=defaults.ap_fraction)
    parser.add_argument("--distractors", action=argparse.BooleanOptionalAction, default=defaults.distractors)
    parser.add_argument("--noise-std", type=float, default=defaults.noise_std)
    parser.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False)
    return parser


def main(argv=None):
    """CLI entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = SyntheticConfig(
            num_images=args.num_images,
            image_size=args.image_size,
            num_patients=args.num_patients,
            seed=args.seed,
            prevalence=args.prevalence,
            other_finding_rate=args.other_finding_rate,
            ap_fraction=args.ap_fraction,
            distractors=args.distractors,
            noise_std=args.noise_std,
        )
    except ValueError as error:
        logger.error("%s", error)
        return 2
    out = generate(args.out, config, overwrite=args.overwrite)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
