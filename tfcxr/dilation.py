"""Binary dilation of batched masks by an octagon (`dilate`), the op behind `loose` and `inverse` at source
resolution (prepared data uses its stored distance maps instead: `tfcxr.masking.mask_by_distance`).

The octagon of inradius `r` is the Minkowski sum of horizontal, vertical and two diagonal line
segments, each computed with log2(r) shift-and-or steps: within 8% of a disk of radius `r`, at
O(H * W * log r) instead of O(H * W * r^2) for an explicit disk. The batch is bit-packed first
(`pack_bits`: bit i of a uint8 word holds image 8g + i), so one shift-and-or moves eight masks at
once; the result is the same, image by image. A radius that is a graph constant unrolls the loops
(inside `tf.data` a `tf.while_loop`'s op launches cost more than the work). The work is done on a
canvas grown by the octagon's reach, so pixels near the border are not lost.
"""

import numpy as np
import tensorflow as tf


def _shift(x, dy, dx):
    """Shift `x` [N, H, W, C] by (dy, dx) pixels (Python ints or int tensors), filling with 0."""
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    maximum = max if isinstance(dy, int) and isinstance(dx, int) else tf.maximum
    pad_top, pad_bottom = maximum(dy, 0), maximum(-dy, 0)
    pad_left, pad_right = maximum(dx, 0), maximum(-dx, 0)
    padded = tf.pad(x, [[0, 0], [pad_top, pad_bottom], [pad_left, pad_right], [0, 0]])
    shifted = padded[:, pad_bottom : pad_bottom + height, pad_right : pad_right + width, :]
    shifted.set_shape(x.shape)
    return shifted


_BITS = (1, 2, 4, 8, 16, 32, 64, 128)  # bit i of a packed uint8 word: image 8g + i of the batch


def pack_bits(mask):
    """Pack a batch of binary masks eight to a byte.

    Args:
        mask: bool (N, H, W, C).

    Returns:
        uint8 (ceil(N / 8), H, W, C): bit i of word g is the pixel of image 8g + i (missing images: 0).
    """
    mask = tf.cast(mask, tf.uint8)
    count = tf.shape(mask)[0]
    groups = (count + 7) // 8
    mask = tf.pad(mask, [[0, groups * 8 - count], [0, 0], [0, 0], [0, 0]])
    mask = tf.reshape(mask, tf.concat([[groups, 8], tf.shape(mask)[1:]], 0))
    bits = tf.reshape(tf.constant(_BITS, tf.uint8), [1, 8, 1, 1, 1])
    return tf.reduce_sum(mask * bits, axis=1)  # distinct bits: the sum is their or


def unpack_bits(packed, count):
    """Inverse of `pack_bits`: uint8 (G, H, W, C) -> bool (count, H, W, C)."""
    bits = tf.reshape(tf.constant(_BITS, tf.uint8), [1, 8, 1, 1, 1])
    mask = tf.bitwise.bitwise_and(packed[:, tf.newaxis], bits) > 0  # (G, 8, H, W, C)
    return tf.reshape(mask, tf.concat([[-1], tf.shape(packed)[1:]], 0))[:count]


def _dilate_segment(x, length, dy, dx):
    """Bitwise or over the segment {t * (dy, dx) : t in [-length, length]} (uint8 `x`).

    Shift-and-or doubling: covers 2 * length + 1 points in O(log length) steps; unrolled when
    `length`, `dy` and `dx` are Python ints (no `tf.while_loop`: far fewer op launches inside tf.data).
    """
    span = 2 * length + 1
    if isinstance(length, int):
        result, covered = x, 1
        while covered < span:
            step = min(covered, span - covered)
            result, covered = tf.bitwise.bitwise_or(result, _shift(result, step * dy, step * dx)), covered + step
        return _shift(result, -length * dy, -length * dx)

    def body(result, covered):
        step = tf.minimum(covered, span - covered)
        return tf.bitwise.bitwise_or(result, _shift(result, step * dy, step * dx)), covered + step

    result, _ = tf.while_loop(
        lambda result, covered: covered < span,
        body,
        (x, tf.constant(1, tf.int32)),
    )
    # `result` now covers t in [0, 2 * length]; recentre on t in [-length, length].
    return _shift(result, -length * dy, -length * dx)


def dilate(mask, radius):
    """Dilate a binary mask with an octagon of inradius `radius` (~ a disk).

    Args:
        mask: float32 (batch, height, width, 1) in {0, 1}.
        radius: int32 scalar tensor >= 0, pixels.

    Returns:
        float32 (batch, height, width, 1) in {0, 1}.
    """
    return tf.cast(dilate_bool(mask > 0.5, radius), mask.dtype)


def dilate_bool(mask, radius):
    """`dilate` on a bool mask: bool (batch, height, width, 1) -> bool, same shape."""
    count = tf.shape(mask)[0]
    packed = pack_bits(mask)  # (ceil(batch / 8), height, width, 1) uint8
    # Regular octagon of inradius r: axis segments of half-length a and diagonal
    # segments of half-length b = a / sqrt(2), with a + 2b = r.
    known = tf.get_static_value(radius)
    if known is not None:  # Python ints: the segment loops unroll (float32 rounding, as in the TF branch)
        r = np.float32(known)
        axis = int(np.round(r / np.float32(1.0 + 2.0**0.5)))
        diagonal = int(np.round((r - np.float32(axis)) / np.float32(2.0)))
        one, zero = 1, 0
    else:
        radius = tf.cast(radius, tf.float32)
        axis = tf.cast(tf.round(radius / (1.0 + 2.0**0.5)), tf.int32)
        diagonal = tf.cast(tf.round((radius - tf.cast(axis, tf.float32)) / 2.0), tf.int32)
        one, zero = tf.constant(1, tf.int32), tf.constant(0, tf.int32)
    # Work on a canvas grown by the octagon's reach, so no partial result is shifted off the image.
    reach = axis + 2 * diagonal
    height, width = tf.shape(packed)[1], tf.shape(packed)[2]
    packed = tf.pad(packed, [[0, 0], [reach, reach], [reach, reach], [0, 0]])
    packed = _dilate_segment(packed, axis, zero, one)
    packed = _dilate_segment(packed, axis, one, zero)
    packed = _dilate_segment(packed, diagonal, one, one)
    packed = _dilate_segment(packed, diagonal, one, -one)
    out = unpack_bits(packed[:, reach : reach + height, reach : reach + width], count)
    out.set_shape(mask.shape)
    return out
