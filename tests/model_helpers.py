"""Shared inputs for the tfcxr.models tests (classifier, preprocessor)."""

import numpy as np


def images(n=2, size=32, seed=0):
    """(n, size, size, 1) float32 gray images, uniform in [0, 1], from a seeded generator."""
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 1)).astype(np.float32)
