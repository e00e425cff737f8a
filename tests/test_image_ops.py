"""tfcxr.data.image_ops: per-image mask-then-resize ops, shapes and value ranges."""

import numpy as np
import pytest
import tensorflow as tf

from tfcxr.data import image_ops
from tfcxr.data.lung_distance import lung_distance
from tfcxr.data.image_ops import (load_and_mask, mask_and_resize, resize_prepared, resize_to_training,
                                   scale_distance)
from tfcxr.data.pipeline import PipelineConfig


def test_resize_to_training_keeps_aspect_ratio_and_clips():
    image = tf.fill((20, 40, 1), 1.5)  # wide, out of range
    out = resize_to_training(image, 16).numpy()
    assert out.shape == (16, 16, 1) and out.max() == 1.0
    assert (out[:3] == 0).all() and (out[-3:] == 0).all()  # zero padding above and below
    np.testing.assert_allclose(out[5:11], 1.0)


def test_resize_prepared_resizes_the_pair_alike_and_counts_distances_at_s():
    image = tf.constant(np.full((8, 8, 1), 255, np.uint8))
    lung = np.zeros((8, 8), bool)
    lung[:, 4:] = True
    x, distance = resize_prepared(image, tf.constant(lung_distance(lung)[..., None]), 4)
    assert x.dtype == tf.float32 and x.shape == (4, 4, 1) and distance.dtype == tf.uint8
    np.testing.assert_allclose(x.numpy(), 1.0)
    # Stored distances 4 3 2 1 0 0 0 0, halved at S: the lung is columns 2-3, column 0 is 1.5-2 px away.
    np.testing.assert_array_equal(distance.numpy()[..., 0], [[2, 1, 0, 0]] * 4)


def test_resize_prepared_gives_originals_pixels_and_the_masks_edges_within_a_pixel():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 256, (512, 400, 1), dtype=np.uint8))
    yy, xx = np.mgrid[:512, :400]
    disk = (yy - 250) ** 2 / 200**2 + (xx - 180) ** 2 / 120**2 <= 1
    x, distance = resize_prepared(image, tf.constant(lung_distance(disk)[..., None]), 224)
    np.testing.assert_array_equal(x.numpy(), resize_to_training(tf.image.convert_image_dtype(image, tf.float32),
                                                                224).numpy())
    smooth = tf.image.resize_with_pad(tf.constant(disk[..., None], tf.float32), 224, 224, antialias=True).numpy()
    smooth = smooth[..., 0] > 0.5
    distance = distance.numpy()[..., 0]
    lung = distance == 0
    assert 2 * (lung & smooth).sum() / (lung.sum() + smooth.sum()) > 0.995
    # Within what the stored map holds (255 stored px = 111 px at S), distances at S agree with the distance
    # map of the resized mask to within a pixel...
    content = resize_to_training(tf.ones((512, 400, 1)), 224).numpy()[..., 0] > 0.5  # the image inside the padding
    assert content.any(axis=0).sum() <= 175 and content.sum() > 0.75 * 224 * 175
    reference = lung_distance(smooth).astype(int)
    near = content & (reference < 100)
    assert near.sum() > 0.9 * content.sum() and np.abs(distance.astype(int) - reference)[near].max() <= 1
    assert (distance[content & ~near] >= 99).all()
    assert (distance[~content] > 100).all()  # ...and the zero padding is far away


def _refuse(*args, **kwargs):
    raise AssertionError("resampled an input already at S")


@pytest.mark.parametrize("static", [True, False])
def test_inputs_already_at_s_skip_resampling_and_keep_the_resized_values(static):
    """At stored size == S the shortcut returns what the full resize paths give (static or dynamic shapes)."""
    rng = np.random.default_rng(1)
    image = tf.constant(rng.integers(0, 256, (64, 64, 1), dtype=np.uint8))
    disk = np.hypot(*np.mgrid[-32:32, -32:32]) < 20
    stored = tf.constant(lung_distance(disk)[..., None])
    dynamic = [tf.TensorSpec([None, None, 1], tf.uint8)] * 2

    def run(size):  # eager (static shapes) or traced with unknown height and width
        return (resize_prepared(image, stored, size) if static else
                tf.function(lambda i, d: resize_prepared(i, d, size), input_signature=dynamic)(image, stored))

    x, distance = run(64)
    as_float = tf.image.convert_image_dtype(image, tf.float32)
    np.testing.assert_array_equal(x.numpy(), tf.image.resize_with_pad(as_float, 64, 64, antialias=True).numpy())
    np.testing.assert_array_equal(distance.numpy(), scale_distance(stored, 64).numpy())
    np.testing.assert_array_equal(distance.numpy(), stored.numpy())
    if static:  # known shapes decide in Python: at S neither resampling op is even built
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(image_ops, "scale_distance", _refuse)
            patch.setattr(image_ops.tf.image, "resize_with_pad", _refuse)
            np.testing.assert_array_equal(run(64)[1].numpy(), stored.numpy())
    wide = tf.cast(stored, tf.int32) + 300 * tf.cast(stored == 255, tf.int32)  # int32, far pixels past 255
    np.testing.assert_array_equal(resize_prepared(image, wide, 64)[1].numpy(), stored.numpy())  # saturated to uint8
    smaller_x, smaller = run(32)
    assert smaller_x.shape == (32, 32, 1)
    np.testing.assert_array_equal(smaller.numpy(), scale_distance(stored, 32).numpy())  # not at S: resampled


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
