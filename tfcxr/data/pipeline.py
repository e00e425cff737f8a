"""tf.data input pipeline: curated NIH split + lung masks -> masked, batched images.

One function, `make_dataset(config, split)`, reads top to bottom. Two paths, chosen by the source:

Image files with a mask folder (and `tfds:nih_cxr14`, the full-resolution config)::

    read file -> decode -> mask (source resolution) -> resize to S
      -> [cache] -> [shuffle] -> batch -> [augment] -> prefetch

Prepared data (a TFDS dataset whose examples carry a `mask`, e.g. `tfds:nih_cxr14/masked_512`)::

    decode image + stored mask -> resize both to S -> [cache] -> [shuffle] -> batch
      -> mask the batch (training resolution) -> [augment] -> prefetch

- The masking settings are one `tfcxr.masking.MaskSpec` (`config.mask_spec`): mode, margin, fill
  and S = `mask_spec.image_size`. See `tfcxr.masking` for what a fraction or "Npx" margin means on
  each path (the same anatomy on both).
- At source resolution the mask is hole-filled before use; a mask file whose size differs
  from its image is resized to the image with nearest neighbour first.
- At training resolution the prepared (already cleaned) mask is resized like its image and
  thresholded at 0.5, then masked with batched ops: no per-image hole filling, so `tight`,
  `loose`, `box` and `inverse` cost about what `original` costs.
- Resizing keeps the aspect ratio: `tf.image.resize_with_pad` (antialiased,
  zero padding), to (S, S).
- `cache` (memory or a file prefix) stores the resized images (and resized masks on the
  prepared path), so augmentation stays random per epoch.
- Augmentation (training split only, when `augment=True`) runs on batches with
  Keras preprocessing layers: small rotation, translation and zoom, brightness
  and contrast. No horizontal flip: heart and lungs are not left/right symmetric.
- Elements are `(image, labels)`: image float32 (batch, S, S, 1) in [0, 1],
  labels float32 (batch, 5) in `TARGETS` order. The model holds its own
  backbone normalisation (`tfcxr.models.CxrPreprocessor`).

Sources (`config.data`):
- an NIH-layout folder: `Data_Entry_2017.csv`, `Data_Entry_2017_v2020.csv(.gz)`
  or `labels.csv`, with images in `images/`, `images_*/images/` or the folder;
- a metadata CSV file (images found next to it the same way);
- `tfds:<name>[/<config>]` (e.g. `tfds:nih_cxr14`, `tfds:nih_cxr14/masked_512`): a TFDS dataset
  whose examples hold `image` (uint8 (H, W, 1)), `image_id` (file name), `labels` (5 ints in
  TARGETS order) and, when prepared, `mask` (uint8 (H, W, 1), 0/255); splits `train`,
  `validation`, `test`. Without a `mask` feature the mask folder is used.

Masks: `MASKDIR/<image stem>.png`, uint8 0/255 (the segment helper's contract).
They are checked up front, in Python: a missing mask names the file.
"""

import dataclasses
import logging
import pathlib

import numpy as np
import pandas as pd
import tensorflow as tf

from tfcxr.data.io import decode_image_tf
from tfcxr.data.nih import SPLITS, CurationConfig, curate, find_images, load_metadata
from tfcxr.labels import NO_FINDING, TARGETS
from tfcxr.masking import MaskSpec, mask_spec_properties

logger = logging.getLogger(__name__)

METADATA_NAMES = (
    "Data_Entry_2017.csv",
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "labels.csv",
)
TFDS_PREFIX = "tfds:"
AUTOTUNE = tf.data.AUTOTUNE


@mask_spec_properties
@dataclasses.dataclass
class PipelineConfig:
    """Everything `make_dataset` needs.

    Attributes:
        data: NIH-layout folder, metadata CSV, or `tfds:<name>[/<config>]`.
        masks: mask folder (MASKDIR/<stem>.png); not needed for mode `original` or a prepared
            TFDS source (whose examples carry their mask).
        mask_spec: the `tfcxr.masking.MaskSpec` (mode, margin, fill, image size S).
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


def is_tfds(data):
    """True for a `tfds:<name>` source."""
    return str(data).startswith(TFDS_PREFIX)


def find_metadata(data):
    """Metadata CSV and image root for a folder or CSV path.

    Returns:
        (csv_path, image_root) as `pathlib.Path`s.
    """
    path = pathlib.Path(data)
    if path.is_file():
        return path, path.parent
    if path.is_dir():
        for name in METADATA_NAMES:
            if (path / name).is_file():
                return path / name, path
        raise FileNotFoundError(
            f"{path}: no metadata CSV found; expected one of {', '.join(METADATA_NAMES)} in this folder."
        )
    raise FileNotFoundError(f"{path}: data not found (expected an NIH-layout folder, a metadata CSV or tfds:<name>).")


def mask_path_for(masks_dir, image_id):
    """`MASKDIR/<image stem>.png` for an image file name."""
    return pathlib.Path(masks_dir) / f"{pathlib.Path(image_id).stem}.png"


def load_records(config):
    """Curated records with file paths, all splits.

    Args:
        config: `PipelineConfig`.

    Returns:
        DataFrame: `tfcxr.data.nih.curate` columns (image_id, patient_id, TARGETS,
        "No Finding", split, ...) plus `image_path` and `mask_path` (str; "" when
        no mask folder is given or the source is prepared). For `tfds:` sources the rows come from the
        TFDS splits (in their order) and `image_path` is `tfds:<name>/<split>/<image_id>`.
        ``frame.attrs["not_cxr"]``: per split, how many images the mask QC flagged `not_cxr`
        (before any exclusion; zeros without a QC file).

    Raises:
        FileNotFoundError: metadata, an image, or (unless mask="original") a mask
            file is missing; the message names the files.
    """
    if is_tfds(config.data):
        if config.mask_spec.needs_mask and not config.masks and not is_prepared(config):
            raise _needs_masks(config)
        frame = _tfds_records(config)
    else:
        csv_path, image_root = find_metadata(config.data)
        frame = curate(load_metadata(csv_path), config.curation)
        index = find_images(image_root)
        missing = [image_id for image_id in frame["image_id"] if image_id not in index]
        if missing:
            raise FileNotFoundError(
                f"{image_root}: {len(missing)} of {len(frame)} images listed in {csv_path} are missing, "
                f"e.g. {missing[:5]} (looked in images/, images_*/images/ and the folder itself)."
            )
        frame["image_path"] = [str(index[image_id]) for image_id in frame["image_id"]]
    if config.masks:
        frame["mask_path"] = [str(mask_path_for(config.masks, image_id)) for image_id in frame["image_id"]]
    else:
        frame["mask_path"] = ""
    if config.mask_spec.needs_mask and not frame.attrs.get("prepared"):
        check_masks(frame, config.masks)
    return gate_records(frame, config.masks, config.exclude_not_cxr)


def _needs_masks(config):
    return ValueError(
        f"mask={config.mask_spec.mode!r} needs a mask folder (`masks`) for {config.data}, whose examples have no "
        f"`mask`; or use a prepared config such as tfds:nih_cxr14/masked_512. Received: masks={config.masks!r}"
    )


def gate_records(frame, masks_dir, exclude: bool):
    """Count per split the images whose mask QC row is flagged `not_cxr`; drop them from train/validation if asked.

    Args:
        frame: records with `image_id` and `split` columns.
        masks_dir: mask folder holding `qc.csv` / `qc-*-of-*.csv` (or None).
        exclude: drop the flagged train and validation images.

    Returns:
        the (filtered) frame with ``attrs["not_cxr"] = {split: count}``.
    """
    from tfcxr.segment.qc import read_qc

    table = read_qc(masks_dir) if masks_dir else None
    flagged = set() if table is None or not len(table) else set(
        table.loc[table["flags"].str.contains("not_cxr", regex=False), "stem"])
    is_flagged = frame["image_id"].map(lambda image_id: pathlib.Path(image_id).stem in flagged)
    counts = {split: int(is_flagged[frame["split"] == split].sum()) for split in ("train", "validation", "test")}
    if any(counts.values()):
        logger.warning("mask QC flagged not_cxr (not a frontal chest X-ray): %s%s", counts,
                       "; left out of train/validation" if exclude else "; kept (set exclude_not_cxr to leave "
                       "them out)")
    if exclude:
        frame = frame[~(is_flagged & frame["split"].isin(["train", "validation"]))].reset_index(drop=True)
    frame.attrs["not_cxr"] = counts
    return frame


def check_masks(frame, masks_dir):
    """Raise `FileNotFoundError` naming the missing mask files of `frame`."""
    masks_dir = pathlib.Path(masks_dir)
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"{masks_dir}: mask folder not found (expected MASKDIR/<image stem>.png).")
    missing = [path for path in frame["mask_path"] if not pathlib.Path(path).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Missing lung mask file {missing[0]} ({len(missing)} of {len(frame)} masks missing in "
            f"{masks_dir}; expected MASKDIR/<image stem>.png). Generate them with tfcxr.segment or use --mask original."
        )


def split_records(frame, split):
    """Rows of one split, or a `ValueError` when it is unknown or empty."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    part = frame[frame["split"] == split].reset_index(drop=True)
    if part.empty:
        source = frame.attrs.get("source", "the data")
        raise ValueError(f"Split {split!r} is empty in {source} ({len(frame)} curated images in all splits).")
    return part


def load_and_mask(image_path, mask_path, config):
    """Read, decode, mask (source resolution) and resize one image (TF ops).

    Args:
        image_path, mask_path: tf.string scalars.
        config: `PipelineConfig` (its `mask_spec`).

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
        config: `PipelineConfig` (its `mask_spec`).

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
    """A prepared example at training resolution: image and its stored mask resized alike.

    Args:
        image: uint8 (H, W, 1), the stored image.
        lung_mask: uint8 (H, W, 1), the stored cleaned mask (0/255 or 0/1).
        size: S.

    Returns:
        (image float32 (S, S, 1) in [0, 1], lung uint8 (S, S, 1) in {0, 1}); the mask is resized
        bilinearly (antialiased) and thresholded at half its maximum, so edges stay in place.
    """
    both = tf.concat([tf.image.convert_image_dtype(image, tf.float32), tf.cast(lung_mask > 0, tf.float32)], -1)
    both = tf.image.resize_with_pad(both, size, size, antialias=True)  # (S, S, 2): one resize for the pair
    image, lung = tf.clip_by_value(both[..., :1], 0.0, 1.0), both[..., 1:]  # (S, S, 1) each
    return image, tf.cast(lung > 0.5, tf.uint8)


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
    prepared = False
    if is_tfds(config.data):
        dataset, prepared = _tfds_source(config, split)
        if training and not config.cache:
            dataset = dataset.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
    else:
        records = load_records(config) if records is None else records
        part = split_records(records, split)
        labels = part[list(TARGETS)].to_numpy(np.float32)  # (examples, 5)
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
    if prepared:  # (image, lung, labels) batches -> masked at training resolution
        dataset = dataset.map(
            lambda x, lung, y: (config.mask_spec.apply_at_training(x, lung), y),  # (batch, S, S, 1)
            num_parallel_calls=AUTOTUNE,
            deterministic=not training,
        )
    if training and config.augment:
        augmenter = build_augmenter(config.seed)
        dataset = dataset.map(
            lambda x, y: (tf.clip_by_value(augmenter(x, training=True), 0.0, 1.0), y),
            num_parallel_calls=AUTOTUNE,
        )
    return dataset.prefetch(AUTOTUNE)


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


def is_prepared(config):
    """True when a `tfds:` source's examples carry their own lung `mask` (e.g. `nih_cxr14/masked_512`)."""
    return is_tfds(config.data) and "mask" in _tfds_builder(config).info.features


def _tfds_load(config, split, **kwargs):
    import tensorflow_datasets as tfds

    _tfds_builder(config)  # registers tfcxr's builders
    return tfds.load(tfds_name(config.data), split=split, data_dir=config.tfds_data_dir, shuffle_files=False,
                     **kwargs)


def _tfds_records(config):
    """Records (no pixels decoded) of the train/validation/test splits of a TFDS source."""
    import tensorflow_datasets as tfds

    name = tfds_name(config.data)
    prepared = is_prepared(config)
    skip = {"image": tfds.decode.SkipDecoding(), **({"mask": tfds.decode.SkipDecoding()} if prepared else {})}
    rows = []
    for split in SPLITS:
        dataset = _tfds_load(config, split, decoders=skip)
        dataset = dataset.map(lambda e: {k: v for k, v in e.items() if k not in ("image", "mask")})
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


def _tfds_source(config, split):
    """Unbatched examples of a `tfds:<name>` source, in split order, and whether it is prepared.

    Returns:
        (dataset, prepared): prepared sources give (image float32 (S, S, 1), lung uint8 (S, S, 1)
        in {0, 1}, labels float32 (5,)), to be masked after batching; the others give
        (image float32 (S, S, 1) masked at source resolution, labels float32 (5,)).
    """
    dataset = _tfds_load(config, split)
    size = config.mask_spec.image_size
    if is_prepared(config):
        def convert(example):
            image, lung = resize_prepared(example["image"], example["mask"], size)  # (S, S, 1) each
            return image, lung, tf.cast(example["labels"], tf.float32)

        return dataset.map(convert, num_parallel_calls=AUTOTUNE, deterministic=True), True
    if config.mask_spec.needs_mask and not config.masks:
        raise _needs_masks(config)
    masks_dir = str(config.masks or "")

    def convert(example):
        image = tf.image.convert_image_dtype(example["image"], tf.float32)  # (H, W, 1)
        stem = tf.strings.regex_replace(example["image_id"], r"\.[^.]*$", "")
        mask_path = tf.strings.join([masks_dir, "/", stem, ".png"])
        labels = tf.cast(example["labels"], tf.float32)  # (5,)
        return mask_and_resize(image, mask_path, config), labels

    return dataset.map(convert, num_parallel_calls=AUTOTUNE, deterministic=True), False


def label_matrix(frame):
    """float32 (examples, 5) labels of a records frame in TARGETS order."""
    return frame[list(TARGETS)].to_numpy(np.float32)


__all__ = [
    "PipelineConfig",
    "build_augmenter",
    "check_masks",
    "find_metadata",
    "is_prepared",
    "label_matrix",
    "load_and_mask",
    "load_records",
    "make_dataset",
    "mask_path_for",
    "resize_prepared",
    "resize_to_training",
    "split_records",
]
