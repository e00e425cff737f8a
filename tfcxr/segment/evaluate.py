"""Evaluate a lung segmenter on labelled pairs: Dice, IoU and HD95 per image plus mean/median, per prompt strategy.

Image embeddings are computed once and shared by all requested prompt strategies. Metrics are computed at each
mask's own (source) resolution; HD95 is in source pixels.

Usage::

    python -m tfcxr.segment.evaluate --data DIR|pairs.csv|TFDS --prompt gt prior refine --out results.json --worst 8

``--model`` defaults to the ``litemedsam-lungs`` preset; its own priors and inference settings are used unless a
flag overrides them.

``--worst N`` also writes ``results_worst_<prompt>.png``: the N lowest-Dice images of each prompt strategy, the
prediction tinted green with a yellow outline, the ground truth outlined in red.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pathlib
import time

import numpy as np

from tfcxr import cli
from tfcxr.atomic import write_text_atomic

from . import qc
from .eager_masks import segment_lungs
from .presets import DEFAULT_PRESET
from .prompts import PROMPTS

logger = logging.getLogger(__name__)
METRICS = ("dice", "iou", "hd95")


def summarize(per_image: list[dict]) -> dict:
    """Mean and median of each metric over images; HD95 summaries skip infinite values (counted apart)."""
    summary = {"n": len(per_image)}
    for name in METRICS:
        values = np.asarray([row[name] for row in per_image], np.float64)
        finite = values[np.isfinite(values)]
        summary[f"mean_{name}"] = float(finite.mean()) if finite.size else None
        summary[f"median_{name}"] = float(np.median(finite)) if finite.size else None
    summary["hd95_infinite"] = int(sum(not math.isfinite(row["hd95"]) for row in per_image))
    return summary


def _json_safe(rows: list[dict]) -> list[dict]:
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()} for row in rows]


def evaluate(model, pairs, prompts=("refine",), settings=None, batch_size: int = 8, cache_dir=None,
             worst: int = 0, keep_masks: bool = False) -> dict:
    """Segment every pair's image with each prompt strategy and score it against the pair's mask.

    Args:
        model: a ``SamLungModel``.
        pairs: list of ``tfcxr.data.pairs.Pair`` (image float32 (H, W, 1) in [0, 1], mask bool (H, W)).
        prompts: strategies from ("gt", "prior", "refine").
        settings: ``InferenceSettings`` (refine rounds, margin, threshold, clean); None for the model's own.
        batch_size: images per model call.
        cache_dir: optional embedding cache shared with fine-tuning (see ``tfcxr.segment.embedding_cache``).
        worst: also return overlay tiles of this many lowest-Dice images per prompt (key "worst_tiles").
        keep_masks: also return the predicted bool (H, W) masks per prompt (key "masks") and their
            ``mask_stability`` (key "stability").

    Returns:
        ``{prompt: {"summary": {...}, "per_image": [{"name", "dice", "iou", "hd95"}, ...]}}``; with `worst`, each
        prompt also holds ``"worst_tiles": [(caption, uint8 tile), ...]``, lowest Dice first.
    """
    from .embedding_cache import cached_embeddings
    from .metrics import segmentation_metrics

    images = [p.image for p in pairs]
    pixel_values = np.concatenate([np.asarray(model.preprocess(image[None])[0]) for image in images])
    embeddings = cached_embeddings(model, pixel_values, cache_dir, batch_size)
    results = {}
    for prompt in prompts:
        start_time = time.time()
        masks = segment_lungs(model, images, prompt, settings=settings, gt_masks=[p.mask for p in pairs],
                              batch_size=batch_size, embeddings=embeddings, return_stability=keep_masks)
        if keep_masks:
            masks, stability = masks
        rows = [{"name": p.name, **segmentation_metrics(m, p.mask)} for p, m in zip(pairs, masks)]
        results[prompt] = {"summary": summarize(rows), "per_image": rows}
        if keep_masks:
            results[prompt].update(masks=masks, stability=stability)
        if worst:
            order = sorted(range(len(rows)), key=lambda i: rows[i]["dice"])[:worst]
            results[prompt]["worst_tiles"] = [
                (f"{rows[i]['name']} {rows[i]['dice']:.3f}", qc.overlay(images[i], masks[i], reference=pairs[i].mask))
                for i in order]
        logger.info("%s: mean Dice %.4f (decode %.1fs)", prompt, results[prompt]["summary"]["mean_dice"],
                    time.time() - start_time)
    return results


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of `python -m tfcxr.segment.evaluate`."""
    parser = argparse.ArgumentParser(prog="python -m tfcxr.segment.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="pairs folder, pairs CSV (image_path,mask_path) or TFDS name")
    parser.add_argument("--model", default=DEFAULT_PRESET,
                        help=f"preset name, saved model dir, .pth or hub id (default {DEFAULT_PRESET}; "
                             f"{DEFAULT_PRESET}-classic gives classic-definition masks)")
    parser.add_argument("--prompt", nargs="+", choices=PROMPTS, default=["refine"], help="one or more strategies")
    parser.add_argument("--out", required=True, help="results JSON path")
    parser.add_argument("--refine-rounds", type=int, choices=(1, 2, 3), help="default: the model's own")
    parser.add_argument("--margin", type=float, help="refine margin, fraction of the model input size")
    parser.add_argument("--threshold", type=float, help="mask logit threshold (default: the model's own)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cache-dir", help="embedding cache folder (shared with fine-tuning)")
    parser.add_argument("--max-pairs", type=int, default=0, help="seeded subset size (0 = all)")
    parser.add_argument("--clean", action=argparse.BooleanOptionalAction, default=None,
                        help="fill holes and keep the two largest components (default: the model's own)")
    parser.add_argument("--worst", type=int, default=0, metavar="N",
                        help="write an overlay grid of the N lowest-Dice images per prompt next to --out")
    return cli.add_log_level(parser)


def main(argv=None) -> int:
    """Run `python -m tfcxr.segment.evaluate` with `argv` (default: sys.argv); returns the exit status."""
    args = build_parser().parse_args(argv)
    return cli.run(_main, args, logger)


def _main(args) -> int:
    from tfcxr.data.pairs import load_pairs

    from .loading import load_segmenter

    model = load_segmenter(args.model)
    settings = model.inference.replace(refine_rounds=args.refine_rounds, margin=args.margin,
                                       threshold=args.threshold, clean=args.clean)
    pairs = load_pairs(args.data, args.max_pairs)
    start = time.time()
    results = evaluate(model, pairs, args.prompt, settings, args.batch_size, args.cache_dir, args.worst)
    payload = {
        "data": args.data, "model": args.model, "n": len(pairs), "priors": np.round(model.priors, 5).tolist(),
        "settings": settings.to_dict(), "seconds": round(time.time() - start, 1),
        "prompts": {k: {"summary": v["summary"], "per_image": _json_safe(v["per_image"])} for k, v in results.items()},
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(payload, indent=1))
    for prompt, result in results.items():
        if result.get("worst_tiles"):
            captions, tiles = zip(*result["worst_tiles"])
            qc.write_overlay_grid(out.with_name(f"{out.stem}_worst_{prompt}.png"), tiles, captions)
    print(f"{'prompt':8s} {'n':>4s} {'dice':>7s} {'iou':>7s} {'hd95':>7s}  (means; {args.data})")
    for prompt, result in results.items():
        s = result["summary"]
        print(f"{prompt:8s} {s['n']:4d} {s['mean_dice']:7.4f} {s['mean_iou']:7.4f} {s['mean_hd95'] or float('nan'):7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
