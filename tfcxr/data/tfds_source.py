"""TFDS sources of the input pipeline: `tfds:<name>[/<config>]` -> records and unbatched examples.

A source's examples hold `image` (uint8 (H, W, 1)), `image_id` (file name), `patient_id`,
`labels` (5 ints in TARGETS order), `no_finding` and, when prepared (e.g.
`tfds:nih_cxr14/masked_512`), `mask` (uint8 (H, W, 1), 0/255) with its distance map `lung_distance`
(uint8 (H, W, 1), pixels to the nearest lung pixel); splits `train`, `validation`, `test`. The
pipeline masks prepared data from `lung_distance` alone (the `mask` is not decoded). Without these
features the lung masks come from a mask folder (`MASKDIR/<stem>.png`).
tfcxr's own builders (`tfcxr.datasets.BUILDERS`) are registered before loading.
"""

import pathlib

import pandas as pd
import tensorflow as tf

from tfcxr.data.image_ops import mask_and_resize, resize_prepared, resize_to_training
from tfcxr.data.nih_splits import SPLITS
from tfcxr.labels import NO_FINDING, TARGETS
from tfcxr.masking import MAX_DISTANCE

TFDS_PREFIX = "tfds:"


def is_tfds(data):
    """True for a `tfds:<name>` source."""
    return str(data).startswith(TFDS_PREFIX)


def tfds_name(data):
    """`tfds:nih_cxr14/masked_512` -> `nih_cxr14/masked_512`."""
    return str(data)[len(TFDS_PREFIX) :]


def _tfds_builder(config):
    import tensorflow_datasets as tfds

    import tfcxr.datasets

    name = tfds_name(config.data)
    base = name.split("/")[0].split(":")[0]
    if base in tfcxr.datasets.BUILDERS:
        tfcxr.datasets.register(base)
    return tfds.builder(name, data_dir=config.tfds_data_dir)


DISTANCE_FEATURE = "lung_distance"  # what the pipeline decodes of a prepared example, beside its image
PREPARED_FEATURES = ("mask", DISTANCE_FEATURE)


def is_prepared(config):
    """True when a `tfds:` source's examples carry their own lung mask and distance map (e.g. `nih_cxr14/masked_512`).

    Raises:
        ValueError: the source is built on disk only in other versions than this tfcxr reads (e.g. a
            `masked_*` build of nih_cxr14 1.0.0, before `lung_distance`).
    """
    return _prepared_builder(config) is not None


def _prepared_builder(config):
    """The TFDS builder of a prepared `tfds:` source, None for any other source (see `is_prepared`)."""
    if not is_tfds(config.data):
        return None
    builder = _tfds_builder(config)
    if not builder.is_prepared():
        built = pathlib.Path(builder.data_dir).parent
        others = sorted(p.name for p in built.glob("*") if p.is_dir()) if built.is_dir() else []
        if others:
            raise ValueError(f"{config.data}: {built} holds version(s) {', '.join(others)}, this tfcxr reads "
                             f"{builder.version}; rebuild it with `tfds build`")
    return builder if DISTANCE_FEATURE in builder.info.features else None


def _check_margin(config, stored_size):
    """Raise ValueError when the margin reaches past what a prepared source's distance maps hold.

    `stored_size`: longest side of the stored images (the builder config's `image_size`).
    """
    spec = config.mask_spec
    radius = int(spec.margin_pixels(spec.image_size).numpy())
    stored = radius * stored_size / spec.image_size
    if spec.mode in ("loose", "inverse") and stored > MAX_DISTANCE:
        raise ValueError(f"margin={spec.margin!r} is {radius} px at {spec.image_size} px, {stored:.0f} px of the "
                         f"stored images of {config.data}, whose distance maps hold up to {MAX_DISTANCE}")


def _tfds_load(config, split, **kwargs):
    import tensorflow_datasets as tfds

    _tfds_builder(config)  # registers tfcxr's builders
    return tfds.load(tfds_name(config.data), split=split, data_dir=config.tfds_data_dir, shuffle_files=False,
                     **kwargs)


def _needs_masks(config):
    return ValueError(
        f"mask={config.mask_spec.mode!r} needs a mask folder (`masks`) for {config.data}, whose examples have no "
        f"`mask`; or use a prepared config such as tfds:nih_cxr14/masked_512. Received: masks={config.masks!r}"
    )


def tfds_records(config):
    """Records (no pixels decoded) of the train/validation/test splits of a TFDS source.

    Args:
        config: `tfcxr.data.pipeline.PipelineConfig` with a `tfds:` `data`.

    Returns:
        DataFrame, rows in split order: image_id, patient_id, split, `image_path`
        (`tfds:<name>/<split>/<image_id>`), "No Finding" and one 0/1 int column per target;
        ``attrs["source"]`` (the `data` string) and ``attrs["prepared"]`` (bool).

    Raises:
        ValueError: the mask mode needs masks, the examples have none and no mask folder is given.
    """
    import tensorflow_datasets as tfds

    name = tfds_name(config.data)
    prepared = is_prepared(config)
    if config.mask_spec.needs_mask and not config.masks and not prepared:
        raise _needs_masks(config)
    skip = {key: tfds.decode.SkipDecoding() for key in ("image",) + (PREPARED_FEATURES if prepared else ())}
    rows = []
    for split in SPLITS:
        dataset = _tfds_load(config, split, decoders=skip)
        dataset = dataset.map(lambda e: {k: v for k, v in e.items() if k not in ("image",) + PREPARED_FEATURES})
        for example in dataset.as_numpy_iterator():
            image_id = example["image_id"].decode()
            row = {
                "image_id": image_id,
                "patient_id": example["patient_id"].decode(),
                "split": split,
                "image_path": f"{TFDS_PREFIX}{name}/{split}/{image_id}",
                NO_FINDING: int(example["no_finding"]),
            }
            row.update({target: int(value) for target, value in zip(TARGETS, example["labels"])})
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["source"] = str(config.data)
    frame.attrs["prepared"] = prepared
    return frame


def tfds_examples(config, split):
    """Unbatched examples of a `tfds:<name>` source, in split order, and whether it is prepared.

    Args:
        config: `tfcxr.data.pipeline.PipelineConfig` with a `tfds:` `data`.
        split: `"train"`, `"validation"` or `"test"`.

    Returns:
        (dataset, mask_later): a prepared source with a masked mode gives (image float32 (S, S, 1) in
        [0, 1], lung distance uint8 (S, S, 1) in pixels at S, labels float32 (5,)), to be masked after
        batching with `MaskSpec.apply_at_training` (`mask_later` True); otherwise (image float32 (S, S, 1)
        in [0, 1], masked at source resolution unless `original`, labels float32 (5,)). The stored `mask`
        is never decoded, nor `lung_distance` for `original`.

    Raises:
        ValueError: the mask mode needs masks, the examples have none and no mask folder is given; or the
            margin reaches past the stored distance maps (`_check_margin`).
    """
    import tensorflow_datasets as tfds

    size = config.mask_spec.image_size
    builder = _prepared_builder(config)
    prepared = builder is not None
    if prepared and not config.mask_spec.needs_mask:
        def image_only(example):
            image = resize_to_training(tf.image.convert_image_dtype(example["image"], tf.float32), size)
            return image, tf.cast(example["labels"], tf.float32)  # (S, S, 1), (5,)

        dataset = _tfds_load(config, split, decoders={key: tfds.decode.SkipDecoding() for key in PREPARED_FEATURES})
        return dataset.map(image_only, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), False
    if prepared:
        _check_margin(config, int(builder.builder_config.image_size))

        def convert(example):
            image, distance = resize_prepared(example["image"], example[DISTANCE_FEATURE], size)  # (S, S, 1) each
            return image, distance, tf.cast(example["labels"], tf.float32)

        dataset = _tfds_load(config, split, decoders={"mask": tfds.decode.SkipDecoding()})
        return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), True
    dataset = _tfds_load(config, split)
    if config.mask_spec.needs_mask and not config.masks:
        raise _needs_masks(config)
    masks_dir = str(config.masks or "")

    def convert(example):
        image = tf.image.convert_image_dtype(example["image"], tf.float32)  # (H, W, 1)
        stem = tf.strings.regex_replace(example["image_id"], r"\.[^.]*$", "")
        mask_path = tf.strings.join([masks_dir, "/", stem, ".png"])
        labels = tf.cast(example["labels"], tf.float32)  # (5,)
        return mask_and_resize(image, mask_path, config), labels

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), False
