"""Shared inputs of the segmenter tests on the tiny random LiteMedSAM / ViT SAM configs (64 x 64 input)."""

import numpy as np

BOXES = np.asarray([[[4.0, 4.0, 30.0, 60.0], [34.0, 4.0, 60.0, 60.0]]], np.float32)  # (1, 2, 4) in 64-space


def random_image(h, w, seed=0):
    """A float32 (h, w, 1) image of uniform noise in [0, 1)."""
    rng = np.random.default_rng(seed)
    return rng.random((h, w, 1)).astype(np.float32)
