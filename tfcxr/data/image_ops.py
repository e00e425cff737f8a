"""Per-image TF ops of the input pipeline: read, decode, mask at source resolution, resize to S.

- At source resolution the mask is hole-filled before use (`MaskSpec.apply_at_source`); a mask
  file whose size differs from its image is resized to the image with nearest neighbour first.
- Resizing keeps the aspect ratio: `tf.image.resize_with_pad` (antialiased, zero padding), to
  (S, S), S = `mask_spec.image_size`; an image already (S, S) is used as it is.
- A prepared example's image is resized as for `original` and its stored lung distance map
  alongside it (`resize_prepared`), to be masked later, batched, at training resolution.

The saved model's `prepare_image` and Grad-CAM reuse these steps, so serving matches training.
"""

import tensorflow as tf

from tfcxr.data.io import decode_image_tf
from tfcxr.masking import as_distance_map


def load_and_mask(image_path, mask_path, config):
    """Read, decode, mask (source resolution) and resize one image (TF ops).

    Args:
        image_path, mask_path: tf.string scalars.
        config: `tfcxr.data.pipeline.PipelineConfig` (its `mask_spec`).

    Returns:
        float32 (S, S, 1) in [0, 1].
    """
    image = decode_image_tf(tf.io.read_file(image_path))  # (H, W, 1)
    return mask_and_resize(image, mask_path, config)


def resize_to_training(image, size):
    """Aspect-preserving, antialiased, zero-padded resize: float32 (H, W, C) -> (size, size, C), clipped to [0, 1].

    An image already (size, size) is returned clipped, unresampled: the antialiased resize would give the
    same pixels at several times the cost (e.g. `nih_cxr14/masked_512` at S = 512).
    """
    source = tf.convert_to_tensor(image, tf.float32)
    resized = _unless_at(size, source, lambda: tf.image.resize_with_pad(source, size, size, antialias=True))
    return tf.clip_by_value(resized, 0.0, 1.0)  # (S, S, C)


def _unless_at(size, tensor, resize):
    """`tensor` (H, W, C) when it is (size, size) already, else `resize()`; static shapes decide in Python."""
    static = [tensor.shape[0], tensor.shape[1]]
    if any(dim is not None and dim != size for dim in static):
        return resize()

    def at_size():
        same = tf.identity(tensor)
        same.set_shape([size, size, tensor.shape[-1]])  # static only: tf.ensure_shape here failed on the untaken branch
        return same

    if all(dim == size for dim in static):
        return at_size()
    shape = tf.shape(tensor)
    return tf.cond(tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size)), at_size, resize)


def mask_and_resize(image, mask_path, config):
    """Mask a decoded image at source resolution, then resize it (TF ops).

    Args:
        image: float32 (H, W, 1) in [0, 1].
        mask_path: tf.string scalar, a PNG lung mask (0/255); unused for mode `original`.
        config: `tfcxr.data.pipeline.PipelineConfig` (its `mask_spec`).

    Returns:
        float32 (S, S, 1) in [0, 1].
    """
    spec = config.mask_spec
    if spec.needs_mask:
        lung = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)  # (h, w, 1) uint8
        lung = tf.image.resize(lung, tf.shape(image)[:2], method="nearest")  # (H, W, 1)
        image = spec.apply_at_source(image, lung > 127)
    return resize_to_training(image, spec.image_size)


def resize_prepared(image, lung_distance, size):
    """A prepared example at training resolution: the image as `original` gets it, and its lung distance map.

    Args:
        image: uint8 (H, W, 1), the stored image.
        lung_distance: uint8 (H, W, 1), the stored distance map (pixels of `image` to the nearest lung
            pixel, 0 on the lung, capped at 255); another integer type is saturated to uint8.
        size: S.

    Returns:
        (image float32 (S, S, 1) in [0, 1], distance uint8 (S, S, 1)). The image is `resize_to_training`'s,
        the same pixels `original` reads. The distances go through the same aspect-preserving pad and scale,
        sampled bilinearly without antialiasing (distances are smooth), and are counted in pixels at S from
        the lung's edge (half a stored pixel out), plus half a pixel, rounded: 0 is the stored lung at any
        scale. The padding is far from any lung. Capped distances stay beyond any margin the stored map holds
        (`tfcxr.data.tfds_source` checks the margin).
    """
    image = resize_to_training(tf.image.convert_image_dtype(image, tf.float32), size)  # (S, S, 1)
    distance = as_distance_map(lung_distance)
    # Stored at S already: the scaling below is the identity, so skip its float work.
    return image, _unless_at(size, distance, lambda: scale_distance(distance, size))


def scale_distance(lung_distance, size):
    """`resize_prepared`'s distances at S (any stored size): uint8 (H, W, 1) stored pixels -> uint8 (S, S, 1) at S."""
    # Resize the closeness 255 - d, so that resize_with_pad's zero padding reads as far away.
    closeness = tf.image.resize_with_pad(255.0 - tf.cast(lung_distance, tf.float32), size, size, antialias=False)
    per_stored_pixel = size / tf.cast(tf.reduce_max(tf.shape(lung_distance)[:2]), tf.float32)
    from_edge = (254.5 - closeness) * per_stored_pixel  # (d - 0.5) * S / stored, d in stored pixels
    return tf.saturate_cast(tf.round(from_edge + 0.5), tf.uint8)
