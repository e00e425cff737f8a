"""tf.data input pipeline: curated NIH split + lung masks -> masked, batched images.

One function, `make_dataset(config, split)`, reads top to bottom. Two paths, chosen by the source:

Image files with a mask folder (and `tfds:nih_cxr14`, the full-resolution config)::

    read file -> decode -> mask (source resolution) -> resize to S
      -> [cache] -> [shuffle] -> batch -> [augment] -> prefetch

Prepared data (a TFDS dataset whose examples carry a lung `mask` and its `lung_distance` map, e.g.
`tfds:nih_cxr14/masked_512`)::

    decode image + stored lung distance map -> resize both to S -> [cache] -> [shuffle] -> batch
      -> mask the batch (training resolution) and [augment] it, one map -> prefetch

  (`original` decodes and resizes the image only: the stored mask and distances are skipped.)

- The masking settings are one `tfcxr.mask_spec.MaskSpec` (`config.mask_spec`): mode, margin, fill
  and S = `mask_spec.image_size`. See `tfcxr.mask_spec` for what a fraction or "Npx" margin means on
  each path (the same anatomy on both).
- Records (which images, splits, labels, file checks) come from `tfcxr.data.records`; the per-image
  ops (mask at source resolution, aspect-preserving resize) from `tfcxr.data.image_ops`; TFDS
  sources from `tfcxr.data.tfds_source`.
- At training resolution the prepared (already cleaned) mask's distance map is resized like its
  image, then the batch is masked with one comparison: no per-image hole filling and no dilation,
  so `tight`, `loose`, `box` and `inverse` cost about what `original` costs.
- `cache` (memory or a file prefix) stores the resized images (and resized distance maps on the
  prepared path), so augmentation stays random per epoch.
- Augmentation (training split only, when `augment=True`) runs on batches with
  Keras preprocessing layers: small rotation, translation and zoom, brightness
  and contrast. No horizontal flip: heart and lungs are not left/right symmetric.
- Elements are `(image, labels)`: image float32 (batch, S, S, 1) in [0, 1],
  labels float32 (batch, 5) in `TARGETS` order. The model holds its own
  backbone normalisation (`tfcxr.models.CxrPreprocessor`).
"""

import dataclasses

import tensorflow as tf

from tfcxr.data.image_ops import load_and_mask
from tfcxr.data.nih import CurationConfig
from tfcxr.data.records import label_matrix, load_records, split_records
from tfcxr.data.tfds_source import is_tfds, tfds_examples
from tfcxr.mask_spec import MaskSpec, mask_spec_properties

AUTOTUNE = tf.data.AUTOTUNE


@mask_spec_properties
@dataclasses.dataclass
class PipelineConfig:
    """Everything `make_dataset` needs.

    Attributes:
        data: NIH-layout folder, metadata CSV, or `tfds:<name>[/<config>]`.
        masks: mask folder (MASKDIR/<stem>.png); not needed for mode `original` or a prepared
            TFDS source (whose examples carry their mask).
        mask_spec: the `tfcxr.mask_spec.MaskSpec` (mode, margin, fill, image size S).
        batch_size: examples per batch.
        augment: random affine/brightness/contrast on the training split.
        cache: None, "memory", or a file prefix for `Dataset.cache`.
        shuffle_buffer: shuffle buffer size (training split).
        seed: shuffle and augmentation seed.
        curation: `tfcxr.data.nih.CurationConfig` for the split.
        tfds_data_dir: TFDS data_dir for `tfds:` sources.
        exclude_not_cxr: leave out of train and validation the images that the mask folder's QC
            (`tfcxr.segment.qc`) flagged `not_cxr`; the test split is kept whole, so runs stay comparable.
        mask, margin, fill, image_size: shorthands (init only) that override the matching `mask_spec`
            field, e.g. `PipelineConfig(data, mask="original", image_size=64)`; read back as
            properties of `mask_spec`.
    """

    data: str
    masks: str = None
    mask_spec: MaskSpec = None
    batch_size: int = 32
    augment: bool = True
    cache: str = None
    shuffle_buffer: int = 2048
    seed: int = 0
    curation: CurationConfig = dataclasses.field(default_factory=CurationConfig)
    tfds_data_dir: str = None
    exclude_not_cxr: bool = False
    mask: dataclasses.InitVar[str] = None
    margin: dataclasses.InitVar[object] = None
    fill: dataclasses.InitVar[str] = None
    image_size: dataclasses.InitVar[int] = None

    def __post_init__(self, mask, margin, fill, image_size):
        self.mask_spec = MaskSpec.resolve(self.mask_spec, mode=mask, margin=margin, fill=fill, image_size=image_size)
        if int(self.batch_size) < 1:
            raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={self.batch_size!r}")
        if self.mask_spec.needs_mask and not self.masks and not is_tfds(self.data):
            raise ValueError(
                f"mask={self.mask_spec.mode!r} needs a mask folder (`masks`). Received: masks={self.masks!r}"
            )


def build_augmenter(seed=0):
    """Keras layers for small affine, brightness and contrast changes.

    Call: images (batch, S, S, 1) float32 in [0, 1] -> same shape, in [0, 1].
    """
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomRotation(0.02, fill_mode="constant", seed=seed),  # +-7 degrees
            keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
            keras.layers.RandomBrightness(0.1, value_range=(0.0, 1.0), seed=seed + 3),
            keras.layers.RandomContrast(0.1, value_range=(0.0, 1.0), seed=seed + 4),
        ],
        name="augmenter",
    )


def make_dataset(config, split, records=None, training=None):
    """The input pipeline for one split.

    Args:
        config: `PipelineConfig`.
        split: `"train"`, `"validation"` or `"test"`.
        records: output of `load_records(config)` (read when None; unused for `tfds:` sources).
        training: shuffle and augment; default `split == "train"`.

    Returns:
        tf.data.Dataset of (image float32 (batch, S, S, 1) in [0, 1],
        labels float32 (batch, 5) in TARGETS order). Non-training splits keep the
        order of `split_records(records, split)`.
    """
    training = split == "train" if training is None else training
    mask_later = False
    if is_tfds(config.data):
        dataset, mask_later = tfds_examples(config, split)
        if training and not config.cache:
            dataset = dataset.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
    else:
        records = load_records(config) if records is None else records
        part = split_records(records, split)
        labels = label_matrix(part)  # (examples, 5)
        dataset = tf.data.Dataset.from_tensor_slices((part["image_path"].to_numpy(), part["mask_path"].to_numpy(), labels))
        if training and not config.cache:
            # Shuffling file names is cheap; shuffle all of them before reading.
            dataset = dataset.shuffle(len(part), seed=config.seed, reshuffle_each_iteration=True)
        dataset = dataset.map(
            lambda image_path, mask_path, y: (load_and_mask(image_path, mask_path, config), y),
            num_parallel_calls=AUTOTUNE,
            deterministic=not training,
        )
    if config.cache:
        dataset = dataset.cache("" if config.cache == "memory" else str(config.cache))
        if training:
            dataset = dataset.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(int(config.batch_size))
    augment = training and config.augment
    augmenter = build_augmenter(config.seed) if augment else None

    def finish(x, *rest):  # one batch stage: mask (prepared data, training resolution), then augment
        *distance, y = rest
        if distance:
            x = config.mask_spec.apply_at_training(x, distance[0])  # (batch, S, S, 1)
        if augment:
            x = tf.clip_by_value(augmenter(x, training=True), 0.0, 1.0)
        return x, y

    if mask_later or augment:
        dataset = dataset.map(finish, num_parallel_calls=AUTOTUNE, deterministic=not training)
    return dataset.prefetch(AUTOTUNE)
