"""Per-image TF ops of the input pipeline: read, decode, mask at source resolution, resize to S.

- At source resolution the mask is hole-filled before use (`MaskSpec.apply_at_source`); a mask
  file whose size differs from its image is resized to the image with nearest neighbour first.
- Resizing keeps the aspect ratio: `tf.image.resize_with_pad` (antialiased, zero padding), to
  (S, S), S = `mask_spec.image_size`.
- A prepared example's image is resized as for `original` and its stored mask alongside it
  (`resize_prepared`), to be masked later, batched, at training resolution.

The saved model's `prepare_image` and Grad-CAM reuse these steps, so serving matches training.
"""

import tensorflow as tf

from tfcxr.data.io import decode_image_tf


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
    """Aspect-preserving, antialiased, zero-padded resize: float32 (H, W, C) -> (size, size, C), clipped to [0, 1]."""
    image = tf.image.resize_with_pad(image, size, size, antialias=True)  # (S, S, C)
    return tf.clip_by_value(image, 0.0, 1.0)


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


def resize_prepared(image, lung_mask, size):
    """A prepared example at training resolution: the image as `original` gets it, and its stored mask.

    Args:
        image: uint8 (H, W, 1), the stored image.
        lung_mask: uint8 (H, W, 1), the stored cleaned mask (0/255 or 0/1).
        size: S.

    Returns:
        (image float32 (S, S, 1) in [0, 1], lung uint8 (S, S, 1) in {0, 1}). The image is `resize_to_training`'s,
        the same pixels `original` reads. The mask goes through the same aspect-preserving pad and scale, sampled
        bilinearly without antialiasing and thresholded at 0.5: at most half a source pixel from an antialiased
        resize's edge, at a fraction of its cost (the mask's resize was most of what masked modes added per image).
    """
    image = resize_to_training(tf.image.convert_image_dtype(image, tf.float32), size)  # (S, S, 1)
    lung = tf.image.resize_with_pad(tf.cast(lung_mask > 0, tf.float32), size, size, antialias=False)  # (S, S, 1)
    return image, tf.cast(lung > 0.5, tf.uint8)
