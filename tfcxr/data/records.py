"""Curated records of the input pipeline: one row per image with its split, labels, image and mask path.

    records = load_records(config)           # all splits, files checked up front
    test = split_records(records, "test")    # one split, in record order
    y = label_matrix(test)                   # float32 (examples, 5)

Sources (`config.data`):
- an NIH-layout folder: `Data_Entry_2017.csv`, `Data_Entry_2017_v2020.csv(.gz)`
  or `labels.csv`, with images in `images/`, `images_*/images/` or the folder;
- a metadata CSV file (images found next to it the same way);
- `tfds:<name>[/<config>]` (`tfcxr.data.tfds_source`).

Masks: `MASKDIR/<image stem>.png`, uint8 0/255 (the segment helper's contract).
They are checked up front, in Python: a missing mask names the file. The mask folder's QC
(`tfcxr.segment.qc`) may flag images `not_cxr`; they are counted and, if asked, left out of
train and validation.
"""

import logging
import pathlib

import numpy as np

from tfcxr.data.nih import curate
from tfcxr.data.nih_metadata import find_images, find_metadata, load_metadata
from tfcxr.data.nih_splits import SPLITS
from tfcxr.data.tfds_source import is_tfds, tfds_records
from tfcxr.labels import TARGETS

logger = logging.getLogger(__name__)


def mask_path_for(masks_dir, image_id):
    """`MASKDIR/<image stem>.png` for an image file name."""
    return pathlib.Path(masks_dir) / f"{pathlib.Path(image_id).stem}.png"


def load_records(config):
    """Curated records with file paths, all splits.

    Args:
        config: `tfcxr.data.pipeline.PipelineConfig`.

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
    frame = tfds_records(config) if is_tfds(config.data) else _folder_records(config.data, config.curation)
    if config.masks:
        frame["mask_path"] = [str(mask_path_for(config.masks, image_id)) for image_id in frame["image_id"]]
    else:
        frame["mask_path"] = ""
    if config.mask_spec.needs_mask and not frame.attrs.get("prepared"):
        check_masks(frame, config.masks)
    return gate_records(frame, config.masks, config.exclude_not_cxr)


def _folder_records(data, curation):
    """Curated rows of an NIH-layout folder or metadata CSV, with `image_path`; missing images raise."""
    csv_path, image_root = find_metadata(data)
    frame = curate(load_metadata(csv_path), curation)
    index = find_images(image_root)
    missing = [image_id for image_id in frame["image_id"] if image_id not in index]
    if missing:
        raise FileNotFoundError(
            f"{image_root}: {len(missing)} of {len(frame)} images listed in {csv_path} are missing, "
            f"e.g. {missing[:5]} (looked in images/, images_*/images/ and the folder itself)."
        )
    frame["image_path"] = [str(index[image_id]) for image_id in frame["image_id"]]
    return frame


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


def label_matrix(frame):
    """float32 (examples, 5) labels of a records frame in TARGETS order."""
    return frame[list(TARGETS)].to_numpy(np.float32)
