"""Segmentation metrics on binary masks: Dice, IoU and HD95.

All functions take two boolean (or 0/1) masks of the same shape ``(height, width)``. Empty-vs-empty counts as a
perfect match (Dice = IoU = 1, HD95 = 0); empty-vs-non-empty gives Dice = IoU = 0 and HD95 = inf.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred).astype(bool)
    target = np.asarray(target).astype(bool)
    if pred.shape != target.shape:
        raise ValueError(f"`pred` and `target` must have the same shape. Received: {pred.shape} and {target.shape}")
    return pred, target


def dice(pred, target) -> float:
    """Dice coefficient 2|A∩B| / (|A| + |B|).

    Args:
        pred: bool (height, width) predicted mask.
        target: bool (height, width) reference mask.

    Returns:
        float in [0, 1].
    """
    pred, target = _pair(pred, target)
    total = pred.sum() + target.sum()
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(pred, target).sum() / total)


def iou(pred, target) -> float:
    """Intersection over union |A∩B| / |A∪B|; bool (height, width) masks -> float in [0, 1]."""
    pred, target = _pair(pred, target)
    union = np.logical_or(pred, target).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, target).sum() / union)


def _surface(mask: np.ndarray) -> np.ndarray:
    # Boundary pixels: the mask minus its erosion (8-connectivity structure).
    eroded = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), border_value=0)
    return mask & ~eroded


def hd95(pred, target, spacing: float | tuple[float, float] = 1.0) -> float:
    """95th-percentile symmetric Hausdorff distance between the mask boundaries.

    ``max(p95(d(∂A -> ∂B)), p95(d(∂B -> ∂A)))`` with Euclidean distances from
    ``scipy.ndimage.distance_transform_edt`` (the medpy / MONAI definition).

    Args:
        pred: bool (height, width) predicted mask.
        target: bool (height, width) reference mask.
        spacing: pixel size (scalar or (row, col)); 1.0 gives pixels.

    Returns:
        float >= 0 in units of `spacing`; 0.0 when both are empty, inf when only one is.
    """
    pred, target = _pair(pred, target)
    if not pred.any() and not target.any():
        return 0.0
    if not pred.any() or not target.any():
        return float("inf")
    surf_p, surf_t = _surface(pred), _surface(target)
    # Distance of every pixel to the nearest boundary pixel of the other mask.
    dist_to_t = ndimage.distance_transform_edt(~surf_t, sampling=spacing)
    dist_to_p = ndimage.distance_transform_edt(~surf_p, sampling=spacing)
    return float(max(np.percentile(dist_to_t[surf_p], 95), np.percentile(dist_to_p[surf_t], 95)))


def segmentation_metrics(pred, target) -> dict[str, float]:
    """Dice, IoU and HD95 (pixels) of one bool (height, width) mask pair, as a dict."""
    return {"dice": dice(pred, target), "iou": iou(pred, target), "hd95": hd95(pred, target)}
