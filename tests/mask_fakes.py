"""A synthetic two-lung mask for the prompt, mask-component and lung-mask tests."""

import numpy as np


def two_lungs(height=100, width=120):
    """bool (height, width) mask with two rectangular lungs: image-left x 10..49, image-right x 70..109."""
    mask = np.zeros((height, width), bool)
    mask[20:80, 10:50] = True  # image-left lung
    mask[15:85, 70:110] = True  # image-right lung
    return mask
