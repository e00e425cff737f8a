"""Quality control of generated lung masks: per-image statistics, flags, QC CSVs and an overlay grid.

Flags (``;``-separated in the ``flags`` column, empty when the mask looks normal):

- ``read_error``: the image could not be read (the ``error`` column says why); no mask is written.
- ``segment_error``: the model failed on this image (the ``error`` column says why); no mask is written.
- ``blank_image``: the image has (almost) no contrast; an empty mask is written.
- ``no_lungs``: the mask is empty or below ``MIN_AREA_FRACTION`` of the image.
- ``area_outlier``: the lung area fraction is outside ``AREA_RANGE``.
- ``component_count``: the mask does not have exactly two components (merged or missing lung).
- ``imbalance``: the smaller of the left/right image halves holds less than ``MIN_BALANCE`` of the larger one's
  lung area.
- ``unstable``: the mask moves a lot with its logit threshold (``stability`` column: Dice of the masks at the
  threshold -/+ 2 logits, below ``MIN_STABILITY``): the model is unsure where the lung border lies. On the
  validation pairs of the shipped preset this flagged every mask below Dice 0.85 (3 of 3) and 6% of all masks.
- ``not_cxr``: the segmenter's CXR gate (``tfcxr.segment.gate``) scores the image below its threshold: it does not
  look like a frontal chest X-ray (noise, a photo, a rotated, flipped, inverted or cropped image). The score is in
  the ``cxr_score`` column (empty when the segmenter has no gate).

Thresholds are module constants, chosen for PA/AP chest X-rays where each lung covers roughly 8-25% of the image.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import pathlib

import cv2
import numpy as np

from tfcxr.atomic import write_bytes_atomic

logger = logging.getLogger(__name__)

QC_COLUMNS = (
    "stem", "image_path", "mask_path", "height", "width", "area_fraction", "components", "left_fraction",
    "right_fraction", "balance", "stability", "cxr_score", "flags", "error",
)
QC_FLAGS = ("read_error", "segment_error", "blank_image", "no_lungs", "area_outlier", "component_count", "imbalance",
            "unstable", "not_cxr")
MIN_AREA_FRACTION = 0.02
AREA_RANGE = (0.08, 0.65)
MIN_BALANCE = 0.4
BLANK_RANGE = 0.02  # an image whose (p99 - p1) intensity range is below this is blank
MIN_STABILITY = 0.88  # chosen on the preset's validation pairs (see the ``unstable`` flag)


def is_blank(image) -> bool:
    """True when a float32 (height, width[, 1]) image in [0, 1] has (almost) no contrast."""
    low, high = np.percentile(np.asarray(image, np.float32), [1, 99])
    return bool(high - low < BLANK_RANGE)


def mask_stats(mask, image=None, cxr_score=None, cxr_threshold=None, stability=None) -> dict:
    """QC statistics and flags of one lung mask.

    Args:
        mask: bool (height, width) lung mask.
        image: optional float32 (height, width[, 1]) image in [0, 1], to flag blank images.
        cxr_score: optional gate score in [0, 1] of the image (probability of a frontal CXR).
        cxr_threshold: the gate's threshold; a `cxr_score` below it flags ``not_cxr``.
        stability: optional ``tfcxr.segment.mask_components.mask_stability`` of the mask; below ``MIN_STABILITY`` flags
            ``unstable``.

    Returns:
        dict with ``height, width, area_fraction, components, left_fraction, right_fraction, balance, stability,
        cxr_score, flags`` (``flags`` a ``;``-joined string of :data:`QC_FLAGS`).
    """
    mask = np.asarray(mask).astype(bool)
    height, width = mask.shape
    area = mask.mean()
    count = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1
    half = width // 2
    left, right = mask[:, :half].sum() / mask.size, mask[:, half:].sum() / mask.size
    balance = min(left, right) / max(left, right) if max(left, right) > 0 else 0.0
    flags = []
    if image is not None and is_blank(image):
        flags.append("blank_image")
    if cxr_score is not None and cxr_threshold is not None and cxr_score < cxr_threshold:
        flags.append("not_cxr")
    if area < MIN_AREA_FRACTION:
        flags.append("no_lungs")
    else:
        if not AREA_RANGE[0] <= area <= AREA_RANGE[1]:
            flags.append("area_outlier")
        if count != 2:
            flags.append("component_count")
        if balance < MIN_BALANCE:
            flags.append("imbalance")
        if stability is not None and stability < MIN_STABILITY:
            flags.append("unstable")
    return {
        "height": height, "width": width, "area_fraction": round(float(area), 5), "components": int(count),
        "left_fraction": round(float(left), 5), "right_fraction": round(float(right), 5),
        "balance": round(float(balance), 4), "stability": "" if stability is None else round(float(stability), 4),
        "cxr_score": "" if cxr_score is None else round(float(cxr_score), 4),
        "flags": ";".join(flags),
    }


def qc_filename(shard: tuple[int, int] | None = None) -> str:
    """``qc.csv``, or ``qc-00002-of-00004.csv`` for shard (2, 4)."""
    return "qc.csv" if shard is None else f"qc-{shard[0]:05d}-of-{shard[1]:05d}.csv"


class QCWriter:
    """Append QC rows to a CSV, flushing each batch, so that an interrupted run keeps its record.

    Use as a context manager: ``with QCWriter(path) as qc: qc.write(rows)``.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self._handle = None
        self._writer = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        if not new:
            self._repair_tail()
        self._handle = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=QC_COLUMNS, extrasaction="ignore")
        if new:
            self._writer.writeheader()
        return self

    def _repair_tail(self):
        # A run killed mid-write may leave a partial last line: cut the file back to its last newline.
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):
            with open(self.path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def write(self, rows) -> None:
        """Append dict rows (keys from :data:`QC_COLUMNS`) and flush."""
        for row in rows:
            self._writer.writerow(row)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def __exit__(self, *exc):
        self._handle.close()
        return False


def read_qc(mask_dir):
    """Read and merge ``qc.csv`` and every ``qc-*-of-*.csv`` of a mask directory.

    Rows are de-duplicated by ``stem``, keeping the last one written (a resumed run's retry wins).

    Returns:
        pandas DataFrame with :data:`QC_COLUMNS`, sorted by stem (empty if there is no QC file).
    """
    import pandas as pd

    paths = sorted(glob.glob(os.path.join(mask_dir, "qc.csv")) + glob.glob(os.path.join(mask_dir, "qc-*-of-*.csv")))
    frames = [pd.read_csv(p, dtype={"stem": str, "flags": str, "error": str}, keep_default_na=False) for p in paths]
    if not frames:
        return pd.DataFrame(columns=list(QC_COLUMNS))
    table = pd.concat(frames, ignore_index=True)
    return table.drop_duplicates("stem", keep="last").sort_values("stem").reset_index(drop=True)


def overlay(image, mask, size: int = 192, reference=None) -> np.ndarray:
    """Colour overlay of a mask on an image, letterboxed to a square tile.

    Args:
        image: float32 (height, width[, 1]) in [0, 1].
        mask: bool (height, width).
        size: tile side in pixels.
        reference: optional bool (height, width) ground-truth mask, outlined in red.

    Returns:
        uint8 (size, size, 3) BGR tile: the image in gray, the lung mask tinted green with its outline in yellow
        (and the reference outline in red).
    """
    gray = (np.clip(np.asarray(image, np.float32).reshape(np.shape(mask)), 0, 1) * 255).astype(np.uint8)
    tile = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    mask = np.asarray(mask).astype(np.uint8)
    tile[mask > 0] = (0.6 * tile[mask > 0] + 0.4 * np.array([0, 255, 0])).astype(np.uint8)
    thickness = max(1, max(mask.shape) // 200)
    outlines = [(mask, (0, 255, 255))] + ([] if reference is None else [(reference, (0, 0, 255))])
    for outlined, colour in outlines:
        contours, _ = cv2.findContours(np.asarray(outlined).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(tile, contours, -1, colour, thickness=thickness)
    scale = size / max(tile.shape[:2])
    tile = cv2.resize(tile, (max(1, round(tile.shape[1] * scale)), max(1, round(tile.shape[0] * scale))))
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[: tile.shape[0], : tile.shape[1]] = tile
    return canvas


def write_overlay_grid(path, tiles, captions=None, columns: int = 4) -> pathlib.Path:
    """Write a PNG grid of overlay tiles (see :func:`overlay`) with optional captions; returns the path.

    Args:
        path: output PNG path (written atomically).
        tiles: list of uint8 (size, size, 3) tiles from :func:`overlay`, all the same size.
        captions: optional list of short strings drawn on each tile (e.g. the stem and flags).
        columns: tiles per row.
    """
    tiles = [np.array(t) for t in tiles] or [np.zeros((192, 192, 3), np.uint8)]
    size = tiles[0].shape[0]
    for tile, caption in zip(tiles, captions or []):
        cv2.putText(tile, caption[:40], (3, size - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 255), 1, cv2.LINE_AA)
    rows = -(-len(tiles) // columns)
    grid = np.zeros((rows * size, min(columns, len(tiles)) * size, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * size : (r + 1) * size, c * size : (c + 1) * size] = tile
    # tfcxr.data.io.write_png_atomic takes gray arrays; write the colour grid the same atomic way.
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", grid)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    return write_bytes_atomic(path, encoded.tobytes())
