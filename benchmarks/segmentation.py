"""Segmentation benchmarks: the seeded held-out split of the real lung pairs, and LiteMedSAM / ViT SAM speed.

Subcommands::

    # Seeded split of ../shared/data into pairs manifests (CSV) + a JSON listing the stems and counts.
    python benchmarks/segmentation.py split --data-root ../shared/data --out /tmp/seg_split \\
        --json benchmarks/results/segmentation_split.json

    # Inference settings on validation pairs only: refine rounds x margin x logit threshold x flip averaging.
    python benchmarks/segmentation.py sweep --model runs/seg --run-validation --data /tmp/seg_split/val_v7.csv \
        --json benchmarks/results/segmentation_sweep.json

    # images/s at batch 1 and 8, and peak resident memory (resource.getrusage).
    python benchmarks/segmentation.py speed --model litemedsam --json benchmarks/results/segmentation_speed.json
    python benchmarks/segmentation.py speed --model flaviagiammarino/medsam-vit-base   # ViT SAM: GPU + hub only

The split itself is :func:`tfcxr.data.lung_split.split_lung_sets` (its docstring gives the rules).
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import platform
import resource
import time

import numpy as np

logger = logging.getLogger("benchmarks.segmentation")


def _flip_priors(priors: np.ndarray) -> np.ndarray:
    """(2, 4) normalised (image-left, image-right) lung boxes of an image -> the same for its mirror image."""
    mirrored = np.stack([1.0 - priors[:, 2], priors[:, 1], 1.0 - priors[:, 0], priors[:, 3]], axis=-1)
    return mirrored[::-1].astype(np.float32)


def run_validation_pairs(run_dir) -> list:
    """The validation pairs of a fine-tuning run: ``split.json`` "validation" names looked up in its config's data."""
    import yaml

    from tfcxr.segment.finetune import load_pairs

    run = pathlib.Path(run_dir)
    try:
        names = set(json.loads((run / "split.json").read_text())["validation"])
        data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{run}: not a fine-tuning run with split.json and config.yaml ({err})") from err
    return [pair for pair in load_pairs(data) if pair.name in names]


def sweep_inference(model_spec: str, data: list[str], cache_dir=None, thresholds=(-1.0, -0.5, 0.0, 0.5),
                    rounds=(0, 1, 2), margins=(0.01, 0.02, 0.03), run_validation: bool = False) -> dict:
    """Mean Dice of refine settings, logit thresholds and flip averaging on labelled validation pairs.

    `data` lists pairs folders / CSV manifests; `run_validation` adds the validation pairs of the fine-tuning run
    `model_spec` (see :func:`run_validation_pairs`).

    Each setting decodes the prior boxes, refines `rounds` times with `margin`, upsamples the per-lung logits to the
    source size, takes the lung-wise max (optionally averaged with the mirrored image's logits, mirrored back),
    thresholds and cleans the mask, and scores Dice at source resolution.

    Returns:
        {"model", "data", "n", "names", "mean_dice": {setting: float}, "per_image": {setting: [dice, ...]}}.
    """
    import tensorflow as tf

    from tfcxr.segment import load_segmenter
    from tfcxr.segment.finetune import cached_embeddings, load_pairs
    from tfcxr.segment.metrics import segmentation_metrics
    from tfcxr.segment.prompts import clean_lung_mask, decode_with_refine, input_boxes

    model = load_segmenter(model_spec)
    priors = model.priors
    pairs = (run_validation_pairs(model_spec) if run_validation else []) + [
        pair for spec in data for pair in load_pairs(spec)]
    if not pairs:
        raise ValueError(f"No labelled pairs found in {data}")
    views = {"none": (priors, False), "flip": (_flip_priors(priors), True)}
    embeddings, sizes_of = {}, []  # a mirrored image has its original's sizes
    for view, (_, mirrored) in views.items():
        prepared = [model.preprocess((p.image[:, ::-1] if mirrored else p.image)[None]) for p in pairs]
        embeddings[view] = cached_embeddings(model, np.concatenate([np.asarray(x) for x, _ in prepared]), cache_dir)
        sizes_of = sizes_of or [sizes for _, sizes in prepared]
    settings = [(r, m) for r in rounds for m in (margins if r else margins[:1])]
    per_image: dict[str, list[float]] = {}
    for index, (pair, sizes) in enumerate(zip(pairs, sizes_of)):
        for r, margin in settings:
            lung_logits = {}
            for view, (view_priors, mirrored) in views.items():
                boxes = input_boxes(model, view_priors[None], sizes)
                logits, _ = decode_with_refine(model, tf.convert_to_tensor(embeddings[view][index : index + 1]),
                                               boxes, r, margin)
                full = np.asarray(model.postprocess(logits, sizes))[0].max(axis=0)  # (H, W)
                lung_logits[view] = full[:, ::-1] if mirrored else full
            for tta in views:
                combined = lung_logits["none"] if tta == "none" else (lung_logits["none"] + lung_logits["flip"]) / 2
                for threshold in thresholds:
                    dice = segmentation_metrics(clean_lung_mask(combined > threshold), pair.mask)["dice"]
                    per_image.setdefault(f"rounds={r} margin={margin} threshold={threshold} tta={tta}", []).append(dice)
        logger.info("sweep: %d/%d images", index + 1, len(pairs))
    mean = {k: round(float(np.mean(v)), 4) for k, v in sorted(per_image.items(), key=lambda kv: -np.mean(kv[1]))}
    return {"model": model_spec, "data": list(data), "n": len(pairs), "names": [p.name for p in pairs],
            "mean_dice": mean, "per_image": {k: [round(d, 4) for d in v] for k, v in per_image.items()}}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure_speed(model_name: str, batch_sizes=(1, 8), repeats: int = 3) -> dict:
    """Images/s of preprocess + embed + decode (2 prior boxes) per batch size, and peak RSS."""
    import tensorflow as tf

    from tfcxr.segment import load_segmenter
    from tfcxr.segment.prompts import input_boxes

    is_hub = "/" in model_name and not pathlib.Path(model_name).exists()
    if is_hub and not tf.config.list_physical_devices("GPU"):
        return {"model": model_name, "skipped": "ViT SAM needs a GPU (and hub access); none found"}
    try:
        model = load_segmenter(model_name)
    except OSError as err:
        return {"model": model_name, "skipped": f"cannot load: {err}"}
    rng = np.random.default_rng(0)
    results = {"model": model_name, "image_size": model.image_size, "device": tf.config.list_physical_devices("GPU")
               and "GPU" or "CPU", "machine": platform.processor() or platform.machine(), "batches": {}}
    for batch_size in batch_sizes:
        images = rng.random((batch_size, 512, 512, 1), dtype=np.float32)

        def run():
            pixel_values, sizes = model.preprocess(images)
            boxes = input_boxes(model, np.broadcast_to(model.priors, (batch_size, 2, 4)), sizes)
            return np.asarray(model.decode(model.embed(pixel_values), boxes))

        start = time.perf_counter()
        run()  # warm-up / tracing
        warmup = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        best = min(times)
        results["batches"][str(batch_size)] = {
            "images_per_second": round(batch_size / best, 3), "seconds_per_batch_best": round(best, 3),
            "seconds_per_batch_median": round(float(np.median(times)), 3), "warmup_seconds": round(warmup, 2)}
        logger.info("batch %d: %.3f images/s", batch_size, batch_size / best)
    results["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    split = sub.add_parser("split", help="seeded held-out split of the real lung pairs")
    split.add_argument("--data-root", default="../shared/data")
    split.add_argument("--out", required=True, help="folder for the CSV manifests")
    split.add_argument("--json", help="also write the stems and counts here")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--v7-train-max", type=int, default=0)
    split.add_argument("--v7-test-max", type=int, default=0)
    split.add_argument("--v7-val-max", type=int, default=0,
                       help="write val_v7.csv with this many of the V7 pairs --v7-train-max leaves out")
    sweep = sub.add_parser("sweep", help="inference settings on validation pairs (never the test sets)")
    sweep.add_argument("--model", required=True, help="litemedsam | fine-tuned model dir")
    sweep.add_argument("--data", nargs="*", default=[], help="pairs folders / CSV manifests")
    sweep.add_argument("--run-validation", action="store_true",
                       help="add the validation pairs of the fine-tuning run given as --model (its split.json)")
    sweep.add_argument("--cache-dir", help="embedding cache folder (shared with fine-tuning and evaluation)")
    sweep.add_argument("--json", help="write the results here")
    speed = sub.add_parser("speed", help="images/s at batch 1 and 8, peak memory")
    speed.add_argument("--model", default="litemedsam")
    speed.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    speed.add_argument("--repeats", type=int, default=3)
    speed.add_argument("--json", help="write the results here")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "split":
        from tfcxr.data.lung_split import split_lung_sets

        result = split_lung_sets(args.data_root, args.out, args.seed, args.v7_train_max, args.v7_test_max,
                                 args.v7_val_max)
    elif args.command == "sweep":
        result = sweep_inference(args.model, args.data, args.cache_dir, run_validation=args.run_validation)
    else:
        result = measure_speed(args.model, args.batch_sizes, args.repeats)
    if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
    shown = {"split": "counts", "sweep": "mean_dice"}.get(args.command)
    print(json.dumps(result[shown] if shown else result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
