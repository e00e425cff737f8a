"""The two random views of an X-ray that SimSiam compares, as a tf.data pipeline (pure TF ops).

Views: random resized crop (area `min_crop_scale`..1, aspect 3/4..4/3), optional horizontal
flip (off by default: the heart side is anatomy), contrast, brightness and gamma jitter, and
Gaussian noise. With `mask` other than `original` each image is first masked with its lung
mask (`tfcxr.masking.apply_mask`, at source resolution), so the backbone learns from the same
region the classifier will see. The settings come from a `tfcxr.pretrain.PretrainConfig`.
"""

import math


def load_image(image_path, mask_path, config):
    """Read, mask (source resolution) and resize one X-ray with TF ops.

    Args:
        image_path, mask_path: tf.string scalars (mask_path unused for mask=original).
        config: `PretrainConfig` (mask, margin, fill, image_size).

    Returns:
        float32 (S, S, 1) in [0, 1], aspect ratio kept (zero padding).
    """
    import tensorflow as tf

    from tfcxr.data.io import decode_image_tf
    from tfcxr.masking import apply_mask

    image = decode_image_tf(tf.io.read_file(image_path))  # (H, W, 1)
    if config.mask != "original":
        lung = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)  # (h, w, 1) uint8
        lung = tf.image.resize(lung, tf.shape(image)[:2], method="nearest")  # (H, W, 1)
        image = apply_mask(image, lung > 127, config.mask, config.margin, config.fill)
    size = int(config.image_size)
    image = tf.image.resize_with_pad(image, size, size, antialias=True)  # (S, S, 1)
    return tf.clip_by_value(image, 0.0, 1.0)


def random_view(image, seed, config):
    """One random view of an image (stateless, so the same seed gives the same view).

    Args:
        image: float32 (S, S, 1) in [0, 1].
        seed: int32/int64 (2,) stateless seed.
        config: `PretrainConfig` (image_size, min_crop_scale, flip).

    Returns:
        float32 (S, S, 1) in [0, 1].
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=8)
    size = int(config.image_size)
    area = tf.random.stateless_uniform([], seeds[0], float(config.min_crop_scale), 1.0)
    ratio = tf.exp(tf.random.stateless_uniform([], seeds[1], math.log(3 / 4), math.log(4 / 3)))
    height = tf.minimum(tf.sqrt(area / ratio), 1.0)
    width = tf.minimum(tf.sqrt(area * ratio), 1.0)
    offset = tf.random.stateless_uniform([2], seeds[2]) * tf.stack([1.0 - height, 1.0 - width])
    box = tf.stack([offset[0], offset[1], offset[0] + height, offset[1] + width])[tf.newaxis]  # (1, 4)
    view = tf.image.crop_and_resize(image[tf.newaxis], box, [0], [size, size])[0]  # (S, S, 1)
    if config.flip:
        flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
        view = tf.cond(flip, lambda: view[:, ::-1], lambda: view)
    contrast = tf.random.stateless_uniform([], seeds[4], 0.6, 1.4)
    brightness = tf.random.stateless_uniform([], seeds[5], -0.15, 0.15)
    mean = tf.reduce_mean(view)
    view = tf.clip_by_value((view - mean) * contrast + mean + brightness, 0.0, 1.0)
    gamma = tf.exp(tf.random.stateless_uniform([], seeds[6], math.log(0.7), math.log(1.4)))
    view = tf.pow(view + 1e-6, gamma)
    view = view + 0.02 * tf.random.stateless_normal(tf.shape(view), seeds[7])
    return tf.clip_by_value(view, 0.0, 1.0)


def make_dataset(frame, config):
    """Batches of two views: ((batch, S, S, 1), (batch, S, S, 1)) float32 in [0, 1], full batches only."""
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    dataset = tf.data.Dataset.from_tensor_slices(
        {"image_path": frame["image_path"].to_numpy(str), "mask_path": frame["mask_path"].to_numpy(str)})
    dataset = dataset.map(lambda r: load_image(r["image_path"], r["mask_path"], config), num_parallel_calls=autotune)
    if config.cache:
        dataset = dataset.cache()
    dataset = dataset.shuffle(len(frame), seed=config.seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=config.seed, rerandomize_each_iteration=True).batch(2)  # (2,) int64
    dataset = tf.data.Dataset.zip((dataset, seeds))
    dataset = dataset.map(
        lambda image, seed: (random_view(image, seed, config), random_view(image, seed[::-1] + 1, config)),
        num_parallel_calls=autotune)
    return dataset.batch(int(config.batch_size), drop_remainder=True).prefetch(autotune)
