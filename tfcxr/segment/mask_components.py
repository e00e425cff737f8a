"""Connected lung components of binary masks (numpy / OpenCV): splitting, boxes, cleaning and threshold stability.

The union of the per-lung masks is the lung mask; :func:`clean_lung_mask` fills holes and keeps the two largest
components. :func:`mask_stability` measures how much a mask moves with its logit threshold.
"""

from __future__ import annotations

import cv2
import numpy as np

STABILITY_DELTA = 2.0  # mask stability compares the masks at threshold -/+ this many logits


def lung_components(mask, max_components: int = 2, min_relative_area: float = 0.05) -> list[np.ndarray]:
    """Split a lung mask into its largest connected components, ordered left to right in the image.

    Args:
        mask: bool/0-1 (height, width) mask.
        max_components: keep at most this many components (largest first).
        min_relative_area: drop components smaller than this fraction of the largest one.

    Returns:
        list of bool (height, width) masks, sorted by the x of their centroid; empty if `mask` is empty.
    """
    mask = np.asarray(mask).astype(np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"`mask` must be 2-D (height, width). Received shape: {mask.shape}")
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return []
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(-areas, kind="stable")[:max_components]
    order = [i for i in order if areas[i] >= min_relative_area * areas[order[0]]]
    order.sort(key=lambda i: centroids[i + 1, 0])
    return [labels == (i + 1) for i in order]


def mask_box(mask) -> np.ndarray:
    """Tight box of a non-empty bool (height, width) mask -> float32 (4,) xyxy, max coordinates inclusive."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError("Cannot take the box of an empty mask.")
    return np.asarray([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def component_boxes(mask, max_components: int = 2) -> np.ndarray:
    """One box per lung component of a (height, width) mask -> float32 (num_boxes, 4) xyxy pixels, left first."""
    return np.stack([mask_box(c) for c in lung_components(mask, max_components)]) if np.any(mask) else (
        np.zeros((0, 4), np.float32)
    )


def clean_lung_mask(mask, max_components: int = 2, min_relative_area: float = 0.05) -> np.ndarray:
    """Fill holes and keep the largest lung components.

    Args:
        mask: bool/0-1 (height, width) union of per-lung masks.
        max_components: number of components to keep (2 lungs).
        min_relative_area: drop components smaller than this fraction of the largest one.

    Returns:
        bool (height, width) cleaned mask.
    """
    kept = np.zeros(np.shape(mask), np.uint8)
    for part in lung_components(mask, max_components, min_relative_area):
        contours, _ = cv2.findContours(part.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(kept, contours, -1, 1, thickness=cv2.FILLED)
    return kept.astype(bool)


def mask_stability(logits, threshold: float = 0.0, clean: bool = True) -> float:
    """How little a lung mask moves with its threshold: Dice of the masks at ``threshold -/+ STABILITY_DELTA``.

    Args:
        logits: float (height, width) lung logits (the per-lung maximum).
        threshold: the mask's logit threshold.
        clean: clean both masks as the mask itself is cleaned.

    Returns:
        float in [0, 1]; 1 when the border is sharp, low when the model is unsure where the lung ends.
    """
    loose, strict = (np.asarray(logits) > threshold - STABILITY_DELTA), (np.asarray(logits) > threshold + STABILITY_DELTA)
    if clean:
        loose, strict = clean_lung_mask(loose), clean_lung_mask(strict)
    total = loose.sum() + strict.sum()
    return float(2.0 * np.logical_and(loose, strict).sum() / total) if total else 1.0
