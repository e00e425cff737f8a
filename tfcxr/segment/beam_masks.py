"""Lung-mask generation as an Apache Beam pipeline: the same mask directory contract as ``generate_masks``.

The pipeline lists the images of a folder, spreads them over the workers, batches them, and a ``DoFn`` that loads
the segmenter once per worker (``setup``) writes ``MASKDIR/<stem>.png`` atomically and emits one QC row per image.
The rows are written as JSON lines under a staging folder and merged, after the pipeline has finished, into
``MASKDIR/qc.csv`` (``tfcxr.segment.qc.QC_COLUMNS``; rows of an earlier run are kept unless this run redid the
image), plus ``MASKDIR/overlay_grid.png``. A rerun skips every image whose mask exists and decodes; an unreadable
image becomes a ``read_error`` row and never stops the pipeline.

Locally the DirectRunner runs in multi-process mode; on a cluster the same code runs on Dataflow, Flink or
Spark, given their pipeline options (``MASKDIR`` and the images must then be a path every worker sees, e.g. a
shared or FUSE-mounted file system)::

    python -m tfcxr.segment.predict --images DIR --out MASKDIR --runner DirectRunner --direct_num_workers 2
    python -m tfcxr.segment.predict --images /mnt/nih --out /mnt/nih_masks --runner FlinkRunner \\
        --flink_master HOST:8081 --environment_type PROCESS --environment_config '{"command": "..."}'

Runner options that Beam does not know are an error before any work starts (:func:`pipeline_options`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import pathlib
import shutil
import time
import uuid

import numpy as np

try:
    import apache_beam as beam
except ImportError as _err:  # pragma: no cover - depends on the installed extras
    raise ImportError("tfcxr.segment.beam_masks needs Apache Beam: pip install 'tfcxr[tfds]'") from _err

from . import qc
from .presets import DEFAULT_PRESET

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".beam-qc-"
STATUSES = ("written", "skipped", "read_error", "segment_error")
OVERLAY_NAME = "overlay_grid.png"


class PipelineOptionsError(ValueError):
    """A pipeline option Beam does not understand, or a runner it cannot create."""


@dataclasses.dataclass(frozen=True)
class BeamMaskConfig:
    """What the mask pipeline does; everything a worker needs, so it pickles to Dataflow/Flink/Spark workers.

    Attributes:
        images: folder of images (searched recursively, ``tfcxr.segment.predict.IMAGE_SUFFIXES``).
        out: the mask directory.
        model: segmenter preset name, saved model dir or ``.pth`` (``tfcxr.segment.load_segmenter``).
        batch_size: images per model call inside the DoFn.
        overrides: ``InferenceSettings`` fields to override (e.g. ``{"prompt": "prior"}``); None values are ignored.
        backend: image-encoder backend, ``"tf"`` (reference) or ``"onnx"`` (``SamLungModel.set_embed_backend``).
    """

    images: str
    out: str
    model: str = DEFAULT_PRESET
    batch_size: int = 8
    overrides: dict = dataclasses.field(default_factory=dict)
    backend: str = "tf"

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={self.batch_size}")
        if not pathlib.Path(self.images).is_dir():
            raise FileNotFoundError(f"{self.images}: not a folder of images (the Beam pipeline reads folders)")


# ----------------------------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------------------------
def pipeline_options(beam_args, default_direct_mode: str = "multi_processing"):
    """Parse and check Beam pipeline options before any work starts.

    Args:
        beam_args: command-line style options, e.g. ``["--runner", "DirectRunner", "--direct_num_workers", "2"]``.
        default_direct_mode: ``direct_running_mode`` for the DirectRunner when `beam_args` gives none.

    Returns:
        ``apache_beam.options.pipeline_options.PipelineOptions``.

    Raises:
        PipelineOptionsError: an option no registered ``PipelineOptions`` class defines (named in the message), a
            stray positional value, or a runner Beam cannot create (unknown name or its extra not installed).
    """
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
    from apache_beam.runners import create_runner

    beam_args = [str(a) for a in beam_args]
    stray = [a for i, a in enumerate(beam_args) if not a.startswith("--")
             and (i == 0 or not beam_args[i - 1].startswith("--") or "=" in beam_args[i - 1])]
    if stray:
        raise PipelineOptionsError(f"unexpected pipeline argument {stray[0]!r} (options look like --name value)")
    options = PipelineOptions(beam_args)
    known = options.get_all_options(retain_unknown_options=False)
    everything = options.get_all_options(retain_unknown_options=True)
    unknown = sorted(set(everything) - set(known))
    if unknown:
        raise PipelineOptionsError(f"unknown pipeline option --{unknown[0]} (not a Beam or runner option)")
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    try:
        create_runner(runner)
    except (ValueError, ImportError) as err:
        raise PipelineOptionsError(f"--runner {runner}: {err}") from err
    direct = options.view_as(DirectOptions)
    if runner in ("DirectRunner", "BundleBasedDirectRunner") and not any(
            a.split("=")[0] == "--direct_running_mode" for a in beam_args):
        direct.direct_running_mode = default_direct_mode
    return options


# ----------------------------------------------------------------------------------------------------------------
# Worker
# ----------------------------------------------------------------------------------------------------------------
class SegmentDoFn(beam.DoFn):
    """Batches of ``(stem, image_path)`` -> ``{"status", "row"}`` dicts; the segmenter is loaded in ``setup``.

    ``status`` is one of :data:`STATUSES`; ``row`` is a QC row (:data:`qc.QC_COLUMNS`), or None for a skipped
    image whose row an earlier run already recorded.
    """

    def __init__(self, config: BeamMaskConfig, known_stems: frozenset):
        self.config = config
        self.known_stems = known_stems
        self.masks = None

    def setup(self):
        from .loading import load_segmenter
        from .predict import MaskWriter

        start = time.time()
        model = load_segmenter(self.config.model)
        if self.config.backend != "tf":
            model.set_embed_backend(self.config.backend)
        settings = model.inference.replace(**(self.config.overrides or {}))
        self.masks = MaskWriter(model, self.config.out, settings, self.config.batch_size)
        logger.info("Worker loaded %s (%s backend) in %.1fs", model.name, self.config.backend,
                    time.time() - start)

    def process(self, batch):
        from apache_beam.metrics import Metrics

        todo = []
        for stem, path in batch:
            row = self.masks.existing_row(stem, path)
            if row is not None:
                Metrics.counter("masks", "skipped").inc()
                yield {"status": "skipped", "row": None if stem in self.known_stems else row}
                continue
            image, error_row = self.masks.load(stem, path)
            if error_row is not None:
                Metrics.counter("masks", "read_error").inc()
                yield {"status": "read_error", "row": error_row}
                continue
            todo.append((stem, path, image))
        for row, _, mask in self.masks.write_batch(todo) if todo else []:
            status = "written" if mask is not None else "segment_error"
            Metrics.counter("masks", status).inc()
            yield {"status": status, "row": row}


def _jsonable(record: dict) -> str:
    def default(value):
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    return json.dumps(record, default=default)


def build_pipeline(pipeline, config: BeamMaskConfig, items, known_stems, staging: pathlib.Path):
    """Add the mask transforms to `pipeline`: Create -> Reshuffle -> BatchElements -> SegmentDoFn -> JSON lines.

    Args:
        pipeline: an ``apache_beam.Pipeline``.
        config: :class:`BeamMaskConfig`.
        items: list of ``(stem, image_path)``.
        known_stems: stems that already have a QC row in the mask directory.
        staging: folder for the JSON-lines QC shards (``rows-SSSSS-of-NNNNN.jsonl``).
    """
    return (
        pipeline
        | "List images" >> beam.Create(items)
        | "Spread" >> beam.Reshuffle()
        | "Batch" >> beam.BatchElements(min_batch_size=config.batch_size, max_batch_size=config.batch_size)
        | "Segment" >> beam.ParDo(SegmentDoFn(config, frozenset(known_stems)))
        | "To JSON" >> beam.Map(_jsonable)
        | "Write QC shards" >> beam.io.WriteToText(str(staging / "rows"), file_name_suffix=".jsonl")
    )


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------
def merge_qc(out_dir, records) -> pathlib.Path:
    """Merge this run's QC rows into ``out_dir/qc.csv`` (written atomically; a row of this run wins over an older
    row of the same stem, read with ``qc.read_qc`` from ``qc.csv`` and any per-shard CSVs)."""
    from tfcxr.atomic import write_text_atomic

    out_dir = pathlib.Path(out_dir)
    rows = {str(r["stem"]): r for r in qc.read_qc(out_dir).to_dict("records")}
    rows.update({str(r["row"]["stem"]): r["row"] for r in records if r["row"] is not None})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=qc.QC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for stem in sorted(rows):
        writer.writerow(rows[stem])
    return write_text_atomic(out_dir / "qc.csv", buffer.getvalue())


def _write_overlay(out_dir: pathlib.Path, records) -> None:
    """The QC overlay grid of this run's written masks, flagged ones first (images re-read in the driver)."""
    import cv2

    from tfcxr.data.io import ImageReadError, read_image

    from .predict import OVERLAY_COUNT, OverlayTiles

    written = [r["row"] for r in records if r["status"] == "written"]
    written.sort(key=lambda row: (not row["flags"], row["stem"]))
    tiles = OverlayTiles()
    for row in written[:OVERLAY_COUNT]:
        try:
            image = read_image(row["image_path"])
        except ImageReadError:
            continue
        tiles.add(image, cv2.imread(row["mask_path"], cv2.IMREAD_GRAYSCALE) > 127, row)
    tiles.write(out_dir / OVERLAY_NAME)


def run_mask_pipeline(config: BeamMaskConfig, beam_args=()) -> dict:
    """Generate the lung masks of ``config.images`` with Beam and merge the QC rows into ``config.out/qc.csv``.

    Args:
        config: :class:`BeamMaskConfig`.
        beam_args: pipeline options (runner and its settings), checked by :func:`pipeline_options` first.

    Returns:
        counts: ``{"total", "skipped", "written", "flagged", "read_error", "not_cxr", "segment_error",
        "seconds"}`` (``written`` counts masks written by this run).

    Raises:
        PipelineOptionsError: a bad pipeline option, before any work.
    """
    from .predict import list_images

    options = pipeline_options(beam_args)
    out_dir = pathlib.Path(config.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = list_images(config.images)
    known = set(qc.read_qc(out_dir)["stem"])
    staging = out_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    start = time.time()
    try:
        with beam.Pipeline(options=options) as pipeline:
            build_pipeline(pipeline, config, items, known, staging)
        records = []
        for part in sorted(staging.glob("rows*.jsonl")):
            records.extend(json.loads(line) for line in part.read_text().splitlines() if line.strip())
        merge_qc(out_dir, records)
        _write_overlay(out_dir, records)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rows = [r["row"] for r in records if r["row"] is not None and r["status"] != "skipped"]
    counts = {"total": len(items), **{s: sum(r["status"] == s for r in records) for s in STATUSES},
              "flagged": sum(bool(r["flags"]) for r in rows),
              "not_cxr": sum("not_cxr" in r["flags"] for r in rows), "seconds": round(time.time() - start, 2)}
    counts = {k: counts[k] for k in ("total", "skipped", "written", "flagged", "read_error", "not_cxr",
                                     "segment_error", "seconds")}
    logger.info("Beam masks: %s -> %s", counts, out_dir)
    return counts


__all__ = ["BeamMaskConfig", "PipelineOptionsError", "build_pipeline", "merge_qc", "pipeline_options",
           "run_mask_pipeline"]
