"""Input-pipeline throughput (images/s) per mask mode and output size.

    python benchmarks/pipeline.py                      # synthetic set, 512 px sources
    python benchmarks/pipeline.py --data ../shared/data/nih_cxr14_384 --masks /tmp/nih384_masks

Times `tfcxr.data.pipeline.make_dataset` on the training split (read -> decode ->
mask at source resolution -> resize -> batch -> augment -> prefetch, no cache),
after one warm-up pass, and writes benchmarks/results/pipeline.json.
"""

import argparse
import json
import logging
import os
import pathlib
import platform
import time

logger = logging.getLogger("benchmarks.pipeline")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="NIH-layout folder or metadata CSV (default: a generated synthetic set)")
    parser.add_argument("--masks", help="mask folder (default for synthetic: its masks/)")
    parser.add_argument("--synthetic-dir", default="demo_data/bench_synthetic")
    parser.add_argument("--num-images", type=int, default=128, help="synthetic images")
    parser.add_argument("--source-size", type=int, default=512, help="synthetic source resolution")
    parser.add_argument("--modes", nargs="+", default=["original", "tight", "loose", "box"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 512])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--passes", type=int, default=2, help="timed passes after the warm-up pass")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks/results/pipeline.json"))
    return parser


def _time_passes(dataset, passes):
    count = 0
    for _ in dataset:  # warm-up: tracing, file cache
        pass
    start = time.perf_counter()
    for _ in range(passes):
        for images, _ in dataset:
            count += int(images.shape[0])
    return count / (time.perf_counter() - start), count


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from tfcxr.data.pipeline import PipelineConfig, load_records, make_dataset, split_records

    data, masks = args.data, args.masks
    if data is None:
        from tfcxr.data.synthetic import SyntheticConfig, generate

        data = str(generate(args.synthetic_dir, SyntheticConfig(num_images=args.num_images, image_size=args.source_size)))
        masks = masks or str(pathlib.Path(data) / "masks")
    results = []
    for mode in args.modes:
        for size in args.sizes:
            config = PipelineConfig(
                data=data, masks=masks, mask=mode, image_size=size, batch_size=args.batch_size, augment=args.augment
            )
            records = load_records(config)
            rate, count = _time_passes(make_dataset(config, "train", records), args.passes)
            results.append({"mask": mode, "image_size": size, "images_per_second": round(rate, 1), "images_timed": count})
            logger.info("mask=%-8s size=%4d: %7.1f images/s", mode, size, rate)
    train_images = len(split_records(records, "train"))
    report = {
        "data": data,
        "masks": masks,
        "split": "train",
        "n": train_images,
        "batch_size": args.batch_size,
        "augment": args.augment,
        "passes": args.passes,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{'mask':<10}" + "".join(f"{f'{s} px':>12}" for s in args.sizes) + "   (images/s)")
    for mode in args.modes:
        rates = {r["image_size"]: r["images_per_second"] for r in results if r["mask"] == mode}
        print(f"{mode:<10}" + "".join(f"{rates[s]:>12.1f}" for s in args.sizes))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
