"""tfcxr.dilation: the octagon, image by image against cv2, on both loop paths; bit packing."""

import numpy as np
import pytest
import tensorflow as tf

from tfcxr.dilation import dilate, dilate_bool, pack_bits, unpack_bits


def test_dilate_is_close_to_a_disk():
    mask = np.zeros((1, 61, 61, 1), np.float32)
    mask[0, 30, 30] = 1
    out = dilate(tf.constant(mask), tf.constant(20)).numpy()[0, ..., 0]
    yy, xx = np.mgrid[:61, :61]
    distance = np.hypot(yy - 30, xx - 30)
    assert out[distance <= 20 * np.cos(np.pi / 8) - 1].all()  # octagon's inscribed disk
    assert not out[distance > 20 / np.cos(np.pi / 8) + 1].any()


def _octagon_reference(mask, radius):
    """cv2 dilation of each image of (N, H, W, 1) by the octagon that `dilate` documents, built explicitly."""
    import cv2

    axis = int(np.round(radius / (1 + 2**0.5)))
    diagonal = int(np.round((radius - axis) / 2))
    size = 2 * radius + 1
    kernel = np.zeros((size, size), np.uint8)
    kernel[radius, radius] = 1
    segments = [np.ones((1, 2 * axis + 1), np.uint8), np.ones((2 * axis + 1, 1), np.uint8),
                np.eye(2 * diagonal + 1, dtype=np.uint8), np.fliplr(np.eye(2 * diagonal + 1, dtype=np.uint8))]
    for segment in segments:  # Minkowski sum of the four segments
        kernel = cv2.dilate(kernel, segment)
    return np.stack([cv2.dilate(image[..., 0].astype(np.uint8), kernel)[..., None] for image in mask])


@pytest.mark.parametrize("count", [1, 7, 8, 9, 20])
@pytest.mark.parametrize("radius_known", [True, False], ids=["unrolled", "while_loop"])
def test_dilate_matches_an_explicit_octagon_image_by_image(count, radius_known):
    """Both paths: a constant radius unrolls the loops; a radius known only at run time uses tf.while_loop."""
    rng = np.random.default_rng(count)
    mask = (rng.random((count, 40, 52, 1)) > 0.995).astype(np.float32)
    mask[0, 0, 0] = mask[-1, -1, -1] = 1  # corners: the shifts must not wrap around
    run_time = tf.function(dilate, input_signature=[tf.TensorSpec((None, 40, 52, 1)), tf.TensorSpec((), tf.int32)])
    for radius in (0, 1, 3, 9):
        out = (dilate if radius_known else run_time)(tf.constant(mask), tf.constant(radius)).numpy()
        assert out.shape == mask.shape and out.dtype == np.float32
        np.testing.assert_array_equal(out, _octagon_reference(mask, radius), err_msg=f"radius {radius}")


@pytest.mark.parametrize("count", [1, 8, 13])
def test_pack_bits_round_trips_eight_images_to_a_byte(count):
    mask = np.random.default_rng(0).random((count, 5, 6, 1)) > 0.5
    packed = pack_bits(tf.constant(mask))
    assert packed.dtype == tf.uint8 and packed.shape == ((count + 7) // 8, 5, 6, 1)
    np.testing.assert_array_equal(packed.numpy()[0] & 1, mask[0])  # bit 0 is image 0
    if count > 8:
        np.testing.assert_array_equal((packed.numpy()[1] >> (count - 9)) & 1, mask[-1])  # image 8 + i: bit i
    np.testing.assert_array_equal(unpack_bits(packed, count).numpy(), mask)


def test_dilate_bool_is_dilate_on_bools():
    mask = np.random.default_rng(3).random((3, 20, 24, 1)) > 0.98
    out = dilate_bool(tf.constant(mask), tf.constant(4))
    assert out.dtype == tf.bool
    np.testing.assert_array_equal(out.numpy(), dilate(tf.constant(mask, tf.float32), tf.constant(4)).numpy() > 0.5)
