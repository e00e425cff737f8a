"""Discover lung image/mask pairs in a folder (Montgomery, Shenzhen/JSRT-style or generic layouts).

Used by the `cxr_lung_masks` TFDS builder and by segmentation fine-tuning from a
plain folder. Three layouts are recognised (`EXPECTED_LAYOUTS` shows the trees):

- ``montgomery``: ``CXR_png/<stem>.png`` with two masks per image,
  ``ManualMask/leftMask/<stem>.png`` and ``ManualMask/rightMask/<stem>.png``
  (merged into one union mask by `read_pair`).
- ``shenzhen``: an image folder and a mask folder where the mask is named
  ``<stem>_mask.png`` (Shenzhen, JSRT/SCR exports, the Kaggle
  "Chest X-ray masks and labels" set).
- ``generic``: ``images/<stem>.*`` and ``masks/<stem>.*`` with the same stem.

A root may hold one layout directly, or several datasets one level down
(e.g. ``manual_dir/MontgomerySet/`` and ``manual_dir/shenzhen/``).

`load_pairs` reads labelled pairs into memory (`Pair`) from such a folder, a CSV
manifest or a TFDS dataset; `split_pairs` is the seeded train/validation split of
segmentation fine-tuning.
"""

import csv
import dataclasses
import logging
import pathlib
from typing import NamedTuple

import numpy as np

from tfcxr.data.io import ImageReadError, read_image, read_mask

logger = logging.getLogger(__name__)

LAYOUTS = ("montgomery", "shenzhen", "generic")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".bmp", ".tif", ".tiff")
MASK_EXTENSIONS = (".png", ".gif", ".bmp", ".tif", ".tiff")
IMAGE_DIR_NAMES = ("images", "CXR_png", "image", "img")
MASK_DIR_NAMES = ("masks", "mask")
MASK_SUFFIX = "_mask"

EXPECTED_LAYOUTS = """\
Expected one of these layouts (directly in the folder, or in its subfolders):
  montgomery:                      shenzhen / JSRT-style:           generic:
    CXR_png/<stem>.png               images/<stem>.png                images/<stem>.png
    ManualMask/leftMask/<stem>.png   masks/<stem>_mask.png            masks/<stem>.png
    ManualMask/rightMask/<stem>.png  (also CXR_png/ and mask/)        (0/255 union of both lungs)
Image extensions: {images}; mask extensions: {masks}.""".format(
    images=" ".join(IMAGE_EXTENSIONS), masks=" ".join(MASK_EXTENSIONS)
)


class ImageMaskPair(NamedTuple):
    """One image and its lung mask file(s).

    Attributes:
        image_path: `pathlib.Path` of the radiograph.
        mask_paths: tuple of `pathlib.Path`; one union mask, or (left, right) for Montgomery.
        stem: image file name without extension (the image id).
        source_layout: one of `LAYOUTS`.
    """

    image_path: pathlib.Path
    mask_paths: tuple
    stem: str
    source_layout: str


def _files_by_stem(folder, extensions):
    """{stem: path} of the files in `folder` with one of `extensions` (case-insensitive).

    Raises:
        ValueError: when two files share a stem (e.g. `a.png` and `a.jpg`).
    """
    found = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in extensions or path.name.startswith("."):
            continue
        if path.stem in found:
            raise ValueError(f"{folder}: two files share the stem {path.stem!r}: {found[path.stem].name}, {path.name}")
        found[path.stem] = path
    return found


def _first_dir(root, names):
    """The first existing `root/<name>` folder, matching names case-insensitively, or None."""
    children = {child.name.lower(): child for child in root.iterdir() if child.is_dir()}
    for name in names:
        if name.lower() in children:
            return children[name.lower()]
    return None


def _warn_unmatched(root, kind, stems):
    if stems:
        shown = ", ".join(sorted(stems)[:5]) + (" ..." if len(stems) > 5 else "")
        logger.warning("%s: %d %s without a partner were skipped: %s", root, len(stems), kind, shown)


def _montgomery_pairs(root):
    image_dir = _first_dir(root, ("CXR_png",))
    manual = _first_dir(root, ("ManualMask",))
    left_dir = manual and _first_dir(manual, ("leftMask",))
    right_dir = manual and _first_dir(manual, ("rightMask",))
    if not (image_dir and left_dir and right_dir):
        return None
    images = _files_by_stem(image_dir, IMAGE_EXTENSIONS)
    lefts = _files_by_stem(left_dir, MASK_EXTENSIONS)
    rights = _files_by_stem(right_dir, MASK_EXTENSIONS)
    stems = sorted(set(images) & set(lefts) & set(rights))
    _warn_unmatched(root, "images", set(images) - set(stems))
    _warn_unmatched(root, "masks", (set(lefts) | set(rights)) - set(stems))
    return [ImageMaskPair(images[s], (lefts[s], rights[s]), s, "montgomery") for s in stems]


def _single_mask_pairs(root):
    image_dir = _first_dir(root, IMAGE_DIR_NAMES)
    mask_dir = _first_dir(root, MASK_DIR_NAMES)
    if not (image_dir and mask_dir):
        return None
    images = _files_by_stem(image_dir, IMAGE_EXTENSIONS)
    masks = _files_by_stem(mask_dir, MASK_EXTENSIONS)
    pairs, used = [], set()
    for stem in sorted(images):
        if stem + MASK_SUFFIX in masks:  # the Shenzhen convention wins over a same-stem mask
            mask_stem, layout = stem + MASK_SUFFIX, "shenzhen"
        elif stem in masks:
            mask_stem, layout = stem, "generic"
        else:
            continue
        used.add(mask_stem)
        pairs.append(ImageMaskPair(images[stem], (masks[mask_stem],), stem, layout))
    _warn_unmatched(root, "images", set(images) - {p.stem for p in pairs})
    _warn_unmatched(root, "masks", set(masks) - used)
    return pairs


def find_pairs(root, layout="auto"):
    """Discover image/mask pairs under `root`.

    Args:
        root: folder holding one layout, or subfolders that each hold one (one level deep).
        layout: "auto" (detect per folder) or one of `LAYOUTS` to keep only that layout.

    Returns:
        list of `ImageMaskPair`, sorted by (folder, stem). Files without a partner are
        skipped with a logged warning.

    Raises:
        FileNotFoundError: `root` is missing or holds no recognised pair (the message
            shows `EXPECTED_LAYOUTS`).
        ValueError: unknown `layout`, or two files with the same stem in one folder.
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(f"`layout` must be 'auto' or one of {LAYOUTS}. Received: layout={layout!r}")
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder of image/mask pairs not found.\n{EXPECTED_LAYOUTS}")
    pairs = []
    for folder in [root] + sorted(child for child in root.iterdir() if child.is_dir()):
        found = _montgomery_pairs(folder)
        if found is None:
            found = _single_mask_pairs(folder)
        pairs += found or []
        if found is not None and folder == root:
            break  # the root itself is a dataset: do not also read its image/mask folders as datasets
    if layout != "auto":
        pairs = [pair for pair in pairs if pair.source_layout == layout]
    if not pairs:
        raise FileNotFoundError(
            f"{root}: no image/mask pairs found (layout={layout!r}).\n{EXPECTED_LAYOUTS}"
        )
    return pairs


def read_pair(pair):
    """Read one pair with `tfcxr.data.io` and merge multi-file masks.

    Args:
        pair: an `ImageMaskPair`.

    Returns:
        image: float32 (height, width, 1) in [0, 1].
        mask: bool (height, width), union of the pair's mask files.

    Raises:
        tfcxr.data.io.ImageReadError: unreadable file, or a mask whose size differs from
            its image (the message names the mask file and both shapes).
    """
    image = read_image(pair.image_path)
    mask = np.zeros(image.shape[:2], bool)
    for path in pair.mask_paths:
        mask |= read_mask(path, expected_shape=image.shape)
    return image, mask


@dataclasses.dataclass
class Pair:
    """One labelled example: ``image`` float32 (height, width, 1) in [0, 1], ``mask`` bool (height, width)."""

    name: str
    image: np.ndarray
    mask: np.ndarray


def _pair_files(spec: str) -> list:
    """`ImageMaskPair` list of a pairs folder or of a CSV manifest (image_path, mask_path)."""
    path = pathlib.Path(spec)
    if not (path.is_file() and path.suffix.lower() == ".csv"):
        return find_pairs(path)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"image_path", "mask_path"} <= set(rows[0]):
        raise ValueError(f"{path}: a pairs manifest needs `image_path` and `mask_path` columns. "
                         f"Received: {sorted(rows[0])}")
    return [ImageMaskPair(pathlib.Path(r["image_path"]), (pathlib.Path(r["mask_path"]),),
                          pathlib.Path(r["image_path"]).stem, "manifest") for r in rows]


def load_pairs(spec: str, max_pairs: int = 0, seed: int = 0) -> list[Pair]:
    """Load labelled lung pairs from a directory of pairs, a CSV manifest, or a TFDS dataset name.

    Bad pairs (unreadable image or mask, mask size different from the image) are skipped with a warning that names
    the file; the count is logged.

    Args:
        spec: a folder understood by `find_pairs` (``images/`` + ``masks/``, Shenzhen ``_mask``,
            Montgomery), a ``.csv`` with ``image_path, mask_path`` columns, or a TFDS name (``cxr_lung_masks``).
        max_pairs: 0 for all, else a seeded random subset of that size.
        seed: subset seed.

    Returns:
        list of :class:`Pair`, in a stable order.
    """
    if pathlib.Path(spec).exists():
        files = _pair_files(spec)
        if max_pairs and len(files) > max_pairs:
            keep = np.sort(np.random.default_rng(seed).choice(len(files), max_pairs, replace=False))
            files = [files[i] for i in keep]
        pairs, bad = [], 0
        for pair_files in files:
            try:
                image, mask = read_pair(pair_files)
            except ImageReadError as err:
                bad += 1
                logger.warning("Skipping pair: %s", err)
                continue
            pairs.append(Pair(pair_files.stem, image, mask))
        if bad:
            logger.warning("Skipped %d of %d pairs from %s", bad, len(files), spec)
    else:
        pairs = _load_tfds_pairs(spec, max_pairs, seed)
    if not pairs:
        raise ValueError(f"{spec}: no usable image/mask pairs found")
    return pairs


def _load_tfds_pairs(name: str, max_pairs: int, seed: int) -> list[Pair]:
    """Every split of TFDS dataset `name` (``image``, ``mask`` features) as `Pair`s, optionally a seeded subset."""
    import tensorflow_datasets as tfds

    import tfcxr.datasets  # noqa: F401  registers tfcxr's builders (cxr_lung_masks, nih_cxr14) with TFDS

    try:
        splits = tfds.builder(name).info.splits
    except Exception as err:  # tfds raises DatasetNotFoundError and others
        raise ValueError(f"`data` is neither an existing path nor a TFDS dataset. Received: data={name!r} ({err})")
    pairs = []
    for split in sorted(splits.keys()):
        for i, example in enumerate(tfds.as_numpy(tfds.load(name, split=split))):
            image = np.asarray(example["image"])
            scale = 65535.0 if image.dtype == np.uint16 else 255.0
            image = (image.astype(np.float32) / scale).reshape(image.shape[0], image.shape[1], 1)
            mask = np.asarray(example["mask"]).reshape(image.shape[:2]) > 0
            key = example.get("image_id", example.get("id", f"{split}-{i}"))
            pairs.append(Pair(key.decode() if isinstance(key, bytes) else str(key), image, mask))
    if max_pairs and len(pairs) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False))
        pairs = [pairs[i] for i in keep]
    return pairs


def split_pairs(pairs: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded train/validation split -> (train, val); at least one validation pair when `val_fraction` > 0."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = min(len(pairs) - 1, max(1, round(val_fraction * len(pairs)))) if val_fraction > 0 else 0
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    return [pairs[i] for i in train], [pairs[i] for i in val]
