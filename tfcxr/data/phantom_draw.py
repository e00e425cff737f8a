"""Drawing primitives of the synthetic phantom: polygon smoothing and filling, blur, Gaussian bumps, smooth noise.

Pixel coordinates are floats in pixels; every array is (S, S) for an image of size S.
"""

import cv2
import numpy as np


def chaikin(points, iterations=3):
    """Corner-cutting smoothing of a closed polygon (n, 2) -> (n * 2**iterations, 2)."""
    for _ in range(iterations):
        nxt = np.roll(points, -1, axis=0)
        points = np.stack([0.75 * points + 0.25 * nxt, 0.25 * points + 0.75 * nxt], axis=1).reshape(-1, 2)
    return points


def fill_polygon(shape, polygon):
    """Hard polygon mask: uint8 (H, W) in {0, 1} from float pixel points (n, 2)."""
    out = np.zeros(shape, np.uint8)
    cv2.fillPoly(out, [np.round(polygon * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return out


def blur(array, sigma):
    """Gaussian blur with a sigma in pixels (no-op for tiny sigma)."""
    if sigma < 0.3:
        return array
    return cv2.GaussianBlur(array, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT)


def pixel_grid(size):
    """Broadcastable pixel coordinates: yy float32 (S, 1), xx float32 (1, S)."""
    axis = np.arange(size, dtype=np.float32)
    return axis[:, None], axis[None, :]


def gauss(xx, yy, x, y, rx, ry=None):
    """Separable Gaussian bump exp(-((xx-x)/rx)^2 - ((yy-y)/ry)^2): float32 (S, S)."""
    ry = rx if ry is None else ry
    return np.exp(-(((yy - y) / ry) ** 2)) * np.exp(-(((xx - x) / rx) ** 2))


def smooth_noise(rng, size, cells):
    """Low-frequency noise: float32 (size, size), roughly N(0, 1), `cells` blobs across."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def polyline_points(xs, ys):
    """Float pixel points (n,) and (n,) -> int32 (n, 2) in 1/16 pixel, for cv2 drawing with `shift=4`."""
    return np.round(np.stack([xs, ys], axis=1) * 16).astype(np.int32)
