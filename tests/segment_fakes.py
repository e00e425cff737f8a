"""Tiny synthetic lung image/mask pairs for the segmentation tests."""

import cv2
import numpy as np


def write_pairs(root, count=6, size=(72, 64), stems=None):
    """Write image/mask pairs (two elliptic lungs, 8-bit PNG) to root/images and root/masks; returns root.

    The stems are `stems`, else ``p0 .. p{count - 1}``.
    """
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    height, width = size
    for i, stem in enumerate(stems or [f"p{i}" for i in range(count)]):
        mask = np.zeros(size, np.uint8)
        cv2.ellipse(mask, (width // 4, height // 2), (width // 8, height // 3), 0, 0, 360, 255, -1)
        cv2.ellipse(mask, (3 * width // 4, height // 2), (width // 8, height // 3), 0, 0, 360, 255, -1)
        image = (rng.random(size) * 60).astype(np.uint8) + (mask > 0).astype(np.uint8) * 120
        cv2.imwrite(str(root / "images" / f"{stem}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
    return root
