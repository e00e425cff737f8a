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
"""

import logging
import pathlib
from typing import NamedTuple

import numpy as np

from tfcxr.data.io import read_image, read_mask

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
