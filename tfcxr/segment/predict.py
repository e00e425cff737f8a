"""Generate lung masks for a folder (or TFDS dataset) of chest X-rays: batched, sharded, resumable, with QC.

Output (the mask directory contract): ``MASKDIR/<image stem>.png``, uint8 0/255 union of both lungs at the source
resolution, written atomically; ``MASKDIR/qc.csv`` (or ``qc-00002-of-00004.csv`` per shard, merged by
``tfcxr.segment.qc.read_qc``) with area fraction, components, left/right balance and flags; and an overlay grid
``MASKDIR/overlay_grid.png`` (per shard: ``overlay_grid-00002-of-00004.png``) showing flagged images first.

A rerun skips images whose mask already exists and decodes, so an interrupted job resumes where it stopped. A bad
image (unreadable, corrupt, blank) is flagged in the QC CSV and never stops the run.

With ``--runner`` the same work runs as an Apache Beam pipeline (``tfcxr.segment.beam_masks``): the segmenter is
loaded once per worker, the QC rows are merged into one ``MASKDIR/qc.csv``, and every other ``--option`` is passed
to Beam's ``PipelineOptions`` (an option Beam does not know is an error before any work starts).

Usage::

    python -m tfcxr.segment.predict --images DIR --out MASKDIR --shard 0/4     # the default preset, litemedsam-lungs
    python -m tfcxr.segment.predict --images DIR --out MASKDIR --runner DirectRunner --direct_num_workers 2

The segmenter's own inference settings (prompt strategy, refine rounds, margin, threshold) and lung priors are
used unless a flag overrides them.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import time

import cv2
import numpy as np

from tfcxr import cli

from . import qc
from .eager_masks import embed_images, segment_lungs
from .presets import DEFAULT_PRESET

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
PREDICT_PROMPTS = ("prior", "refine")
EMBED_BACKENDS = ("tf", "onnx")
OVERLAY_COUNT = 16


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"`--shard` must look like i/n (e.g. 0/4). Received: {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"`--shard` needs 0 <= i < n. Received: {text!r}")
    return index, count


# ----------------------------------------------------------------------------------------------------------------
# Sources: (stem, image_path_or_id, loader) items
# ----------------------------------------------------------------------------------------------------------------
def list_images(source: str) -> list[tuple[str, str]]:
    """(stem, path) of every image file under a folder (recursive), sorted by path; duplicate stems are dropped."""
    root = pathlib.Path(source)
    seen, items = set(), []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        if path.stem in seen:
            logger.warning("%s: duplicate image stem %r; keeping the first one", path, path.stem)
            continue
        seen.add(path.stem)
        items.append((path.stem, str(path)))
    return items


def _tfds_items(name: str, shard: tuple[int, int]):
    """Yield (stem, id, image float32 (H, W, 1)) of a TFDS dataset's images for one shard."""
    import tensorflow_datasets as tfds

    try:
        dataset = tfds.load(name, split="all")
    except Exception as err:  # tfds raises DatasetNotFoundError and others
        raise ValueError(f"`--images` is neither a folder nor a TFDS dataset. Received: {name!r} ({err})") from err
    for i, example in enumerate(tfds.as_numpy(dataset)):
        if i % shard[1] != shard[0]:
            continue
        key = next((example[k] for k in ("image_id", "id", "filename") if k in example), str(i))
        stem = pathlib.PurePath(key.decode() if isinstance(key, bytes) else str(key)).stem
        image = np.asarray(example["image"])
        image = (image.astype(np.float32) / (65535.0 if image.dtype == np.uint16 else 255.0))[..., :1]
        yield stem, f"tfds:{name}/{i}", image


def is_valid_mask(path) -> bool:
    """True when `path` exists and decodes as an image (atomic writes mean no half-written masks)."""
    path = pathlib.Path(path)
    return path.is_file() and path.stat().st_size > 0 and cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) is not None


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------
def segment_batch(model, images, settings=None, batch_size: int = 8) -> list:
    """``(mask, cxr_score, stability)`` per image; an image the model fails on gets ``(exception, None, None)``.

    The embeddings are computed once and feed both the masks and the gate (score None without a gate). When the
    batch fails, its images are retried one by one, so one odd image cannot stop a 100k-image run.
    """
    def run(part):
        embeddings = embed_images(model, part, batch_size)
        masks, stabilities = segment_lungs(model, part, settings=settings, batch_size=batch_size,
                                           embeddings=embeddings, return_stability=True)
        scores = model.gate.score(embeddings) if model.gate is not None else [None] * len(part)
        return [(mask, None if score is None else float(score), stability)
                for mask, score, stability in zip(masks, scores, stabilities)]

    if not images:
        return []
    try:
        return run(images)
    except Exception as err:  # noqa: BLE001 - any model failure becomes a QC row, never a crash
        logger.warning("Batch failed (%s: %s); retrying its images one by one", type(err).__name__, err)
    results = []
    for image in images:
        try:
            results.extend(run([image]))
        except Exception as single_err:  # noqa: BLE001 - flagged as segment_error in the QC CSV
            results.append((single_err, None, None))
    return results


class MaskWriter:
    """Turns images into mask files and QC rows: the per-image work shared by ``generate_masks`` and the Beam
    pipeline (``tfcxr.segment.beam_masks``).

    Args:
        model: a ``SamLungModel``.
        out_dir: the mask directory (created); masks go to ``out_dir/<stem>.png`` (uint8 0/255).
        settings: ``tfcxr.segment.prompts.InferenceSettings``; None for the model's own.
        batch_size: images per model call.
    """

    def __init__(self, model, out_dir, settings=None, batch_size: int = 8):
        self.model = model
        self.out_dir = pathlib.Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.batch_size = int(batch_size)
        self.threshold = None if model.gate is None else float(model.gate.threshold)

    def mask_path(self, stem: str) -> pathlib.Path:
        return self.out_dir / f"{stem}.png"

    def existing_row(self, stem: str, path: str) -> dict | None:
        """The QC row of an image whose valid mask already exists (recomputed from the mask), else None."""
        mask_path = self.mask_path(stem)
        if not is_valid_mask(mask_path):
            return None
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127
        return {"stem": stem, "image_path": path, "mask_path": str(mask_path), **qc.mask_stats(mask), "error": ""}

    @staticmethod
    def load(stem: str, path: str):
        """``(image float32 (H, W, 1) in [0, 1], None)``, or ``(None, read_error QC row)`` if it cannot be read."""
        from tfcxr.data.io import ImageReadError, read_image

        try:
            return read_image(path), None
        except ImageReadError as err:
            logger.warning("Flagging unreadable image %s", err)
            return None, {"stem": stem, "image_path": path, "mask_path": "", "flags": "read_error",
                          "error": err.reason}

    def write_batch(self, batch) -> list[tuple[dict, np.ndarray | None, np.ndarray | None]]:
        """Segment a batch, write its masks atomically and return ``(qc row, image, mask)`` per image.

        Args:
            batch: list of ``(stem, image_path, image float32 (H, W, 1) in [0, 1])``.

        Returns:
            one tuple per input, in order; a blank image gets an empty mask (flag ``blank_image``), an image the
            model fails on a ``segment_error`` row and ``mask`` None.
        """
        from tfcxr.data.io import write_png_atomic

        readable = [(stem, path, image) for stem, path, image in batch if not qc.is_blank(image)]
        results = segment_batch(self.model, [im for _, _, im in readable], self.settings, self.batch_size)
        by_stem = {stem: result for (stem, _, _), result in zip(readable, results)}
        out = []
        for stem, path, image in batch:
            mask, score, stability = by_stem.get(stem, (np.zeros(image.shape[:2], bool), None, None))  # blank
            if isinstance(mask, Exception):
                logger.warning("%s: segmentation failed (%s)", path, mask)
                out.append(({"stem": stem, "image_path": path, "mask_path": "", "flags": "segment_error",
                             "error": f"{type(mask).__name__}: {mask}"}, image, None))
                continue
            mask_path = self.mask_path(stem)
            write_png_atomic(mask_path, mask.astype(np.uint8) * 255)
            out.append(({"stem": stem, "image_path": path, "mask_path": str(mask_path),
                         **qc.mask_stats(mask, image, score, self.threshold, stability), "error": ""}, image, mask))
        return out


class OverlayTiles:
    """Up to ``OVERLAY_COUNT`` overlay tiles for the QC grid, flagged images first."""

    def __init__(self):
        self.tiles: list[tuple[bool, np.ndarray, str]] = []

    def add(self, image, mask, row) -> None:
        flagged = bool(row["flags"])
        if len(self.tiles) < OVERLAY_COUNT or (flagged and sum(f for f, _, _ in self.tiles) < OVERLAY_COUNT):
            self.tiles.append((flagged, qc.overlay(image, mask), f"{row['stem']} {row['flags']}"))

    def write(self, path) -> None:
        if not self.tiles:
            return
        tiles = sorted(self.tiles, key=lambda t: not t[0])[:OVERLAY_COUNT]  # flagged first
        qc.write_overlay_grid(path, [t for _, t, _ in tiles], [c for _, _, c in tiles])


def source_entries(source: str, shard: tuple[int, int] | None = None):
    """The images of `source` in this shard: ``(entries, total)``.

    ``entries`` yields ``(stem, path or TFDS id, image)``: image None for a folder (read when needed), a float32
    (H, W, 1) array in [0, 1] for a TFDS dataset. ``total`` is the count for a folder, None for TFDS.
    """
    if pathlib.Path(source).is_dir():
        items = list_images(source)
        if shard is not None:
            items = items[shard[0] :: shard[1]]
        return ((stem, path, None) for stem, path in items), len(items)
    return _tfds_items(source, shard or (0, 1)), None


def _to_segment(entry, masks: MaskWriter, writer, known: set, counts: dict):
    """``(stem, path, image)`` when the entry still needs a mask, else None.

    None when its valid mask exists (skipped; its QC row is rewritten when the run died before writing it) or when
    the image cannot be read (a ``read_error`` QC row is written).
    """
    stem, path, image = entry
    counts["total"] += 1
    if is_valid_mask(masks.mask_path(stem)):
        counts["skipped"] += 1
        if stem not in known:  # mask written but the run died before its QC row
            writer.write([masks.existing_row(stem, path)])
        return None
    if image is None:
        image, error_row = masks.load(stem, path)
        if error_row is not None:
            counts["read_error"] += 1
            writer.write([error_row])
            return None
    return stem, path, image


def _finish_batch(batch, masks: MaskWriter, writer, tiles: OverlayTiles, counts: dict) -> None:
    """Segment the readable images of a batch (and score them with the gate), write masks and QC rows."""
    done = masks.write_batch(batch)
    rows = [row for row, _, _ in done]
    for row, image, mask in done:
        if mask is not None:
            tiles.add(image, mask, row)
    writer.write(rows)
    counts["written"] += len(rows)
    counts["flagged"] += sum(bool(r["flags"]) for r in rows)
    counts["not_cxr"] += sum("not_cxr" in r["flags"] for r in rows)


def generate_masks(model, source: str, out_dir, settings=None, batch_size: int = 8,
                   shard: tuple[int, int] | None = None) -> dict:
    """Write lung masks, QC rows and an overlay grid for every image of `source` in this shard.

    Args:
        model: a ``SamLungModel``; its ``priors`` prompt the lungs.
        source: a folder of images, or a TFDS dataset name.
        out_dir: the mask directory.
        settings: ``tfcxr.segment.prompts.InferenceSettings``; None for the model's own.
        batch_size: images per model call.
        shard: (i, n) to process every n-th image starting at i; None for all.

    Returns:
        counts: ``{"total", "skipped", "written", "flagged", "read_error", "not_cxr"}``.
    """
    masks = MaskWriter(model, out_dir, settings, batch_size)
    out_dir = masks.out_dir
    entries, total = source_entries(source, shard)
    qc_path = out_dir / qc.qc_filename(shard)
    known = set(qc.read_qc(out_dir)["stem"]) if qc_path.is_file() else set()
    counts = {"total": 0, "skipped": 0, "written": 0, "flagged": 0, "read_error": 0, "not_cxr": 0}
    if model.gate is None:
        logger.warning("%s has no CXR gate: the not_cxr QC flag is not computed", model.name)
    tiles = OverlayTiles()
    start_time = time.time()
    with qc.QCWriter(qc_path) as writer:
        batch = []
        for entry in entries:
            item = _to_segment(entry, masks, writer, known, counts)
            if item is None:
                continue
            batch.append(item)
            if len(batch) == batch_size:
                _finish_batch(batch, masks, writer, tiles, counts)
                batch = []
                logger.info("%d/%s images done (%.2f img/s)", counts["total"], total or "?",
                            counts["written"] / max(time.time() - start_time, 1e-9))
        if batch:
            _finish_batch(batch, masks, writer, tiles, counts)
    name = "overlay_grid.png" if shard is None else f"overlay_grid-{shard[0]:05d}-of-{shard[1]:05d}.png"
    tiles.write(out_dir / name)
    logger.info("Masks: %s in %.1fs -> %s", counts, time.time() - start_time, out_dir)
    return counts


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of `python -m tfcxr.segment.predict`."""
    parser = argparse.ArgumentParser(prog="python -m tfcxr.segment.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="folder of images (searched recursively) or TFDS name")
    parser.add_argument("--out", required=True, help="mask directory")
    parser.add_argument("--model", default=DEFAULT_PRESET,
                        help=f"preset name, saved model dir, .pth or hub id (default {DEFAULT_PRESET}; "
                             f"{DEFAULT_PRESET}-classic gives classic-definition masks)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard", type=parse_shard, help="i/n: process every n-th image starting at i")
    parser.add_argument("--backend", choices=EMBED_BACKENDS, default="tf",
                        help="image-encoder backend: tf (reference) or onnx (ONNX Runtime, cached export)")
    parser.add_argument("--runner", help="run as an Apache Beam pipeline on this runner (DirectRunner, "
                        "DataflowRunner, FlinkRunner, SparkRunner, ...); other --options go to Beam")
    add_inference_flags(parser)
    return cli.add_log_level(parser)


def add_inference_flags(parser: argparse.ArgumentParser, prompts=PREDICT_PROMPTS) -> None:
    """``--prompt``, ``--refine-rounds``, ``--margin``, ``--threshold``: overrides of the model's own settings."""
    parser.add_argument("--prompt", choices=prompts, help="prompt strategy (default: the model's own)")
    parser.add_argument("--refine-rounds", type=int, choices=(1, 2, 3), help="default: the model's own")
    parser.add_argument("--margin", type=float, help="refine margin, fraction of the model input size")
    parser.add_argument("--threshold", type=float, help="mask logit threshold (default: the model's own)")


def settings_from_args(model, args: argparse.Namespace):
    """The model's inference settings with the command-line overrides applied."""
    prompt = args.prompt if args.prompt in PREDICT_PROMPTS else None
    return model.inference.replace(prompt=prompt, refine_rounds=args.refine_rounds, margin=args.margin,
                                   threshold=args.threshold)


def _beam_main(args, beam_args) -> int:
    from .beam_masks import BeamMaskConfig, PipelineOptionsError, run_mask_pipeline

    overrides = {"prompt": args.prompt, "refine_rounds": args.refine_rounds, "margin": args.margin,
                 "threshold": args.threshold}
    try:
        if args.shard is not None:
            raise ValueError("`--shard` is for plain runs; a Beam runner spreads the images over its workers")
        config = BeamMaskConfig(images=args.images, out=args.out, model=args.model, batch_size=args.batch_size,
                                overrides={k: v for k, v in overrides.items() if v is not None},
                                backend=args.backend)
        counts = run_mask_pipeline(config, ["--runner", args.runner, *beam_args])
    except (PipelineOptionsError, FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        return 2
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def main(argv=None) -> int:
    """Run `python -m tfcxr.segment.predict` with `argv` (default: sys.argv); returns the exit status."""
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and not args.runner:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)} (pipeline options need --runner)")
    return cli.run(lambda parsed: _beam_main(parsed, beam_args) if parsed.runner else _main(parsed), args, logger)


def _main(args) -> int:
    from .loading import load_segmenter

    model = load_segmenter(args.model)
    if args.backend != "tf":
        model.set_embed_backend(args.backend)
    settings = settings_from_args(model, args)
    logger.info("Segmenter %s, %s, priors %s", model.name, settings, np.round(model.priors, 3).tolist())
    counts = generate_masks(model, args.images, args.out, settings, args.batch_size, args.shard)
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
