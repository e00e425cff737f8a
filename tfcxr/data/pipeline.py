"""tf.data input pipeline: curated NIH split + lung masks -> masked, batched images.

One function, `make_dataset(config, split)`, reads top to bottom::

    read file -> decode -> mask (source resolution) -> resize to image_size
      -> [cache] -> [shuffle] -> batch -> [augment] -> prefetch

- Masking happens at the SOURCE resolution, before resizing, so a `loose`
  margin in pixels means source pixels and the mask edge is as sharp as the
  source allows. A mask file whose size differs from its image is resized to the
  image with nearest neighbour first.
- Resizing keeps the aspect ratio: `tf.image.resize_with_pad` (antialiased,
  zero padding), to (image_size, image_size).
- `cache` (memory or a file prefix) stores the resized, masked images, so
  augmentation stays random per epoch.
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
- `tfds:<name>` (e.g. `tfds:nih_cxr14`): a TFDS dataset whose examples hold
  `image` (uint8 (H, W, 1)), `image_id` (file name, used to find the mask) and
  `labels` (5 ints in TARGETS order); splits `train`, `validation`, `test`.

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
from tfcxr.masking import DEFAULT_MARGIN, apply_mask, parse_margin, validate_fill, validate_mask_mode

logger = logging.getLogger(__name__)

METADATA_NAMES = (
    "Data_Entry_2017.csv",
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "labels.csv",
)
TFDS_PREFIX = "tfds:"
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass
class PipelineConfig:
    """Everything `make_dataset` needs.

    Attributes:
        data: NIH-layout folder, metadata CSV, or `tfds:<name>`.
        masks: mask folder (MASKDIR/<stem>.png); may be None only for mask="original".
        mask: `original`, `tight`, `loose` or `box` (see `tfcxr.masking`).
        margin: `loose`/`box` margin: fraction of width in [0, 1) or pixels ("11px").
        fill: background fill, `zero` or `mean`.
        image_size: output S, images are (S, S, 1).
        batch_size: examples per batch.
        augment: random affine/brightness/contrast on the training split.
        cache: None, "memory", or a file prefix for `Dataset.cache`.
        shuffle_buffer: shuffle buffer size (training split).
        seed: shuffle and augmentation seed.
        curation: `tfcxr.data.nih.CurationConfig` for the split.
        tfds_data_dir: TFDS data_dir for `tfds:` sources.
        exclude_not_cxr: leave out of train and validation the images that the mask folder's QC
            (`tfcxr.segment.qc`) flagged `not_cxr`; the test split is kept whole, so runs stay comparable.
    """

    data: str
    masks: str = None
    mask: str = "loose"
    margin: object = DEFAULT_MARGIN
    fill: str = "zero"
    image_size: int = 128
    batch_size: int = 32
    augment: bool = True
    cache: str = None
    shuffle_buffer: int = 2048
    seed: int = 0
    curation: CurationConfig = dataclasses.field(default_factory=CurationConfig)
    tfds_data_dir: str = None
    exclude_not_cxr: bool = False

    def __post_init__(self):
        validate_mask_mode(self.mask)
        validate_fill(self.fill)
        parse_margin(self.margin)
        if int(self.image_size) < 8:
            raise ValueError(f"`image_size` must be >= 8. Received: image_size={self.image_size!r}")
        if int(self.batch_size) < 1:
            raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={self.batch_size!r}")
        if self.mask != "original" and not self.masks:
            raise ValueError(f"mask={self.mask!r} needs a mask folder (`masks`). Received: masks={self.masks!r}")


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
        no mask folder is given). For `tfds:` sources the rows come from the
        TFDS splits (in their order) and `image_path` is `tfds:<name>/<split>/<image_id>`.
        ``frame.attrs["not_cxr"]``: per split, how many images the mask QC flagged `not_cxr`
        (before any exclusion; zeros without a QC file).

    Raises:
        FileNotFoundError: metadata, an image, or (unless mask="original") a mask
            file is missing; the message names the files.
    """
    if is_tfds(config.data):
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
    if config.mask != "original":
        check_masks(frame, config.masks)
    return gate_records(frame, config.masks, config.exclude_not_cxr)


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
        config: `PipelineConfig` (mask, margin, fill, image_size).

    Returns:
        float32 (image_size, image_size, 1) in [0, 1].
    """
    image = decode_image_tf(tf.io.read_file(image_path))  # (H, W, 1)
    return mask_and_resize(image, mask_path, config)


def mask_and_resize(image, mask_path, config):
    """Mask a decoded image at source resolution, then resize it (TF ops)."""
    if config.mask != "original":
        lung = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)  # (h, w, 1) uint8
        lung = tf.image.resize(lung, tf.shape(image)[:2], method="nearest")  # (H, W, 1)
        image = apply_mask(image, lung > 127, config.mask, config.margin, config.fill)
    size = int(config.image_size)
    image = tf.image.resize_with_pad(image, size, size, antialias=True)  # (S, S, 1)
    return tf.clip_by_value(image, 0.0, 1.0)


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
        records: output of `load_records(config)` (read when None).
        training: shuffle and augment; default `split == "train"`.

    Returns:
        tf.data.Dataset of (image float32 (batch, S, S, 1) in [0, 1],
        labels float32 (batch, 5) in TARGETS order). Non-training splits keep the
        order of `split_records(records, split)`.
    """
    training = split == "train" if training is None else training
    if is_tfds(config.data):
        dataset = _tfds_source(config, split)
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
    if training and config.augment:
        augmenter = build_augmenter(config.seed)
        dataset = dataset.map(
            lambda x, y: (tf.clip_by_value(augmenter(x, training=True), 0.0, 1.0), y),
            num_parallel_calls=AUTOTUNE,
        )
    return dataset.prefetch(AUTOTUNE)


def _tfds_load(config, split, **kwargs):
    import tensorflow_datasets as tfds

    import tfcxr.datasets

    name = str(config.data)[len(TFDS_PREFIX) :]
    if name in tfcxr.datasets.BUILDERS:
        tfcxr.datasets.register(name)
    return tfds.load(name, split=split, data_dir=config.tfds_data_dir, shuffle_files=False, **kwargs)


def _tfds_records(config):
    """Records (no pixels decoded) of the train/validation/test splits of a TFDS source."""
    import tensorflow_datasets as tfds

    name = str(config.data)[len(TFDS_PREFIX) :]
    rows = []
    for split in SPLITS:
        dataset = _tfds_load(config, split, decoders={"image": tfds.decode.SkipDecoding()})
        for example in dataset.map(lambda e: {k: v for k, v in e.items() if k != "image"}).as_numpy_iterator():
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
    return frame


def _tfds_source(config, split):
    """Unbatched (image, labels) from a `tfds:<name>` source (masked, resized), in split order."""
    dataset = _tfds_load(config, split)
    masks_dir = str(config.masks or "")

    def convert(example):
        image = tf.image.convert_image_dtype(example["image"], tf.float32)  # (H, W, 1)
        stem = tf.strings.regex_replace(example["image_id"], r"\.[^.]*$", "")
        mask_path = tf.strings.join([masks_dir, "/", stem, ".png"])
        labels = tf.cast(example["labels"], tf.float32)  # (5,)
        return mask_and_resize(image, mask_path, config), labels

    return dataset.map(convert, num_parallel_calls=AUTOTUNE, deterministic=True)


def label_matrix(frame):
    """float32 (examples, 5) labels of a records frame in TARGETS order."""
    return frame[list(TARGETS)].to_numpy(np.float32)


__all__ = [
    "PipelineConfig",
    "build_augmenter",
    "check_masks",
    "find_metadata",
    "label_matrix",
    "load_and_mask",
    "load_records",
    "make_dataset",
    "mask_path_for",
    "split_records",
]
