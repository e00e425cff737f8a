"""The lung distance map that prepared datasets store beside each mask (`nih_cxr14/masked_*`).

A pixel's value is its Euclidean distance, in pixels, to the nearest lung pixel: 0 on the lung,
rounded to whole pixels, 255 for 255 or more (and everywhere when the mask is empty). Training
takes every mask mode from it with one comparison (`tfcxr.mask_spec.MaskSpec.apply_at_training`):
`loose` with margin r keeps distance <= r, for any r up to 254 pixels.
"""

import cv2
import numpy as np


def lung_distance(lung):
    """Distance map of a lung mask.

    Args:
        lung: bool (H, W), True = lung.

    Returns:
        uint8 (H, W): exact Euclidean distance to the nearest lung pixel, rounded, capped at 255.
    """
    lung = np.asarray(lung, bool)
    if not lung.any():
        return np.full(lung.shape, 255, np.uint8)
    distance = cv2.distanceTransform((~lung).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.minimum(np.round(distance), 255).astype(np.uint8)
