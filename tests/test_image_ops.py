"""tfcxr.data.image_ops: per-image mask-then-resize ops, shapes and value ranges."""

import numpy as np
import pytest
import tensorflow as tf

from tfcxr.data.image_ops import load_and_mask, mask_and_resize, resize_prepared, resize_to_training
from tfcxr.data.pipeline import PipelineConfig


def test_resize_to_training_keeps_aspect_ratio_and_clips():
    image = tf.fill((20, 40, 1), 1.5)  # wide, out of range
    out = resize_to_training(image, 16).numpy()
    assert out.shape == (16, 16, 1) and out.max() == 1.0
    assert (out[:3] == 0).all() and (out[-3:] == 0).all()  # zero padding above and below
    np.testing.assert_allclose(out[5:11], 1.0)


def test_resize_prepared_resizes_the_pair_alike():
    image = tf.constant(np.full((8, 8, 1), 255, np.uint8))
    lung = np.zeros((8, 8, 1), np.uint8)
    lung[:, 4:] = 255
    x, mask = resize_prepared(image, tf.constant(lung), 4)
    assert x.dtype == tf.float32 and x.shape == (4, 4, 1) and mask.dtype == tf.uint8
    np.testing.assert_allclose(x.numpy(), 1.0)
    np.testing.assert_array_equal(mask.numpy()[..., 0], [[0, 0, 1, 1]] * 4)


def test_resize_prepared_gives_originals_pixels_and_the_masks_edges_within_a_pixel():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 256, (512, 400, 1), dtype=np.uint8))
    yy, xx = np.mgrid[:512, :400]
    disk = ((yy - 250) ** 2 / 200**2 + (xx - 180) ** 2 / 120**2 <= 1).astype(np.uint8)[..., None] * 255
    x, mask = resize_prepared(image, tf.constant(disk), 224)
    np.testing.assert_array_equal(x.numpy(), resize_to_training(tf.image.convert_image_dtype(image, tf.float32),
                                                                224).numpy())
    smooth = tf.image.resize_with_pad(tf.constant(disk > 0, tf.float32), 224, 224, antialias=True).numpy() > 0.5
    mask = mask.numpy().astype(bool)
    assert 2 * (mask & smooth).sum() / (mask.sum() + smooth.sum()) > 0.995
    assert not mask[:, 200:].any()  # nothing in the zero padding beside the 400-px-wide image


@pytest.mark.parametrize("mode", ["original", "tight"])
def test_load_and_mask_masks_before_resizing(tmp_path, mode):
    image_path, mask_path = tmp_path / "x.png", tmp_path / "m.png"
    tf.io.write_file(str(image_path), tf.io.encode_png(tf.fill((16, 16, 1), tf.constant(200, tf.uint8))))
    lung = np.zeros((8, 8, 1), np.uint8)  # half the image's size: resized to it, nearest
    lung[:, :4] = 255
    tf.io.write_file(str(mask_path), tf.io.encode_png(tf.constant(lung)))
    config = PipelineConfig(data="", masks=str(tmp_path), mask=mode, fill="zero", image_size=16)
    x = load_and_mask(tf.constant(str(image_path)), tf.constant(str(mask_path)), config).numpy()
    assert x.shape == (16, 16, 1) and 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(x[:, :8], 200 / 255, atol=1e-6)
    np.testing.assert_allclose(x[:, 8:], 0.0 if mode == "tight" else 200 / 255, atol=1e-6)
    decoded = tf.image.convert_image_dtype(tf.io.decode_png(tf.io.read_file(str(image_path)), channels=1), tf.float32)
    np.testing.assert_allclose(mask_and_resize(decoded, tf.constant(str(mask_path)), config).numpy(), x)
