"""Tests of tfcxr.data.phantom_draw: the drawing primitives' shapes and values."""

import numpy as np

from tfcxr.data import phantom_draw


def test_chaikin_and_fill_polygon():
    square = np.array([(2.0, 2.0), (12.0, 2.0), (12.0, 12.0), (2.0, 12.0)])
    smooth = phantom_draw.chaikin(square, iterations=2)
    assert smooth.shape == (16, 2)
    mask = phantom_draw.fill_polygon((16, 16), square)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert mask[7, 7] == 1 and mask[0, 0] == 0


def test_grid_gauss_blur_noise_points():
    yy, xx = phantom_draw.pixel_grid(8)
    assert yy.shape == (8, 1) and xx.shape == (1, 8) and yy.dtype == np.float32
    bump = phantom_draw.gauss(xx, yy, 3.0, 4.0, 2.0)
    assert bump.shape == (8, 8) and bump[4, 3] == 1.0
    image = np.zeros((8, 8), np.float32)
    image[4, 4] = 1
    assert phantom_draw.blur(image, 0.1) is image
    assert np.isclose(phantom_draw.blur(image, 1.0).sum(), 1.0, atol=0.05)
    noise = phantom_draw.smooth_noise(np.random.default_rng(0), 32, 4)
    assert noise.shape == (32, 32) and noise.dtype == np.float32
    points = phantom_draw.polyline_points(np.array([0.5, 1.0]), np.array([2.0, 3.0]))
    assert points.dtype == np.int32 and points.tolist() == [[8, 32], [16, 48]]
