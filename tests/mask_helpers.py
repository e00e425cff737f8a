"""Shared inputs for the masking tests: two rectangular lungs (one with a hole) and a random X-ray."""

import numpy as np


def two_lungs(size=64):
    """Two rectangular 'lungs' with a hole in the left one; bool (size, size).

    Left lung rows 16:48, columns 8:26 with a hole at rows 28:34, columns 14:20; right lung rows 16:48, columns 38:56.
    """
    mask = np.zeros((size, size), bool)
    mask[16:48, 8:26] = True
    mask[16:48, 38:56] = True
    mask[28:34, 14:20] = False  # hole
    return mask


def random_image(size=64, seed=0):
    """float32 (size, size, 1), uniform in [0.2, 1)."""
    return np.random.default_rng(seed).uniform(0.2, 1.0, (size, size, 1)).astype(np.float32)
