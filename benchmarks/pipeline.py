"""Input-pipeline throughput (images/s): 1024-px PNG sources vs the prepared TFDS dataset, per mask mode and size.

    python benchmarks/pipeline.py                       # ~200 synthetic 1024-px images in a temp dir
    python benchmarks/pipeline.py --num-images 400 --sizes 224 --modes original loose

One run, so the ratios compare like with like:

- `source: png`: today's path, `tfcxr.data.pipeline.make_dataset` on the image folder with its
  mask folder (read -> decode -> mask at source resolution with hole filling -> resize).
- `source: prepared`: the same images built into `nih_cxr14/masked_256` and `masked_512` with the
  real TFDS builder (Beam DirectRunner), then `make_dataset` on `tfds:nih_cxr14/masked_<N>` (decode
  the stored image and lung distance map -> resize both -> batch -> mask at training resolution). Each training
  size uses the smallest prepared config at least as large (224 -> masked_256, 512 -> masked_512).

Every configuration times the training split (batch, augment as in training, prefetch, no cache)
after one warm-up pass: `--rounds` rounds over all modes of a source and size, each round starting one mode
later; the median round is reported (all rounds are in the JSON), so a change of machine load hits all modes alike;
the masked/original ratios are medians of the ratios within each round. Beside images/s, each row has the process
CPU time per image (`cpu_ms_per_image`: all of tf.data's threads, so cores a GPU host needs per image/s), and the
summary its ratio (`<mode>_vs_original_cpu`, original's CPU time over the mode's). Two ways to time:

- `--timing steady` (default): batches of `dataset.repeat()` for at least `--min-seconds`, after a few
  warm-up batches, one iterator alive at a time. This is the rate of a long epoch (NIH's training split
  is ~78,000 images, ~2,400 batches).
- `--timing epochs`: whole passes over the split (at least `--passes` and `--min-seconds`), each pass
  starting the pipeline afresh. The synthetic split has ~136 images, about 4 batches, so every pass
  pays the pipeline's start-up latency, which is longer for the masked modes' extra stage. Writes benchmarks/results/pipeline.json: `results`
rows hold `source`, `mask`, `image_size`, `images_per_second`, `images_per_second_per_core`.
"""

import argparse
import json
import logging
import os
import pathlib
import platform
import tempfile
import time

import numpy as np

logger = logging.getLogger("benchmarks.pipeline")

MODES = ("original", "tight", "loose", "box", "inverse")
PREPARED_SIZES = (256, 512)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=200, help="synthetic images")
    parser.add_argument("--source-size", type=int, default=1024, help="synthetic source resolution")
    parser.add_argument("--work-dir", type=pathlib.Path, help="keep the sources and TFDS builds here (default: temp)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 512])
    parser.add_argument("--sources", nargs="+", default=["png", "prepared"], choices=("png", "prepared"),
                        help="pipelines to time (prepared alone: more rounds of the masked/original ratios per minute)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--passes", type=int, default=1, help="timed passes per mode and round (at least)")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="timed seconds per mode and round (at least)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all modes; the median is reported")
    parser.add_argument("--timing", choices=("steady", "epochs"), default="steady",
                        help="steady: a long epoch's rate (repeat()); epochs: whole short passes (see above)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks/results/pipeline.json"))
    return parser


def cores():
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def prepared_config_for(size):
    """Name of the smallest prepared nih_cxr14 config whose longest side is >= `size` (else the largest)."""
    return f"masked_{next((s for s in PREPARED_SIZES if s >= size), PREPARED_SIZES[-1])}"


def build_prepared(manual_dir, data_dir, configs):
    """Build nih_cxr14 `configs` from `manual_dir` (images/, masks/, metadata CSV) into `data_dir`; seconds each."""
    import tensorflow_datasets as tfds

    import tfcxr.datasets

    tfcxr.datasets.register("nih_cxr14")
    seconds = {}
    for name in configs:
        start = time.perf_counter()
        builder = tfds.builder(f"nih_cxr14/{name}", data_dir=str(data_dir))
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
        seconds[name] = round(time.perf_counter() - start, 1)
        logger.info("built nih_cxr14/%s in %.1f s", name, seconds[name])
    return seconds


def time_passes(dataset, passes, min_seconds):
    """(images/s, images timed, process CPU seconds) over at least `passes` passes and `min_seconds` seconds."""
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    done = 0
    while done < passes or time.perf_counter() - start < min_seconds:
        for images, _ in dataset:
            count += int(images.shape[0])
        done += 1
    return count / (time.perf_counter() - start), count, time.process_time() - cpu


def time_steady(dataset, min_seconds, warmup_batches=8):
    """(images/s, images timed, process CPU seconds) of `dataset.repeat()` over at least `min_seconds`, after
    `warmup_batches`."""
    iterator = iter(dataset.repeat())
    for _ in range(warmup_batches):
        next(iterator)
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < min_seconds:
        count += int(next(iterator)[0].shape[0])
    rate, cpu = count / (time.perf_counter() - start), time.process_time() - cpu
    del iterator  # stop its prefetching before the next mode is timed
    return rate, count, cpu


def run(args, work):
    from tfcxr.data.pipeline import PipelineConfig, make_dataset
    from tfcxr.data.records import load_records, split_records
    from tfcxr.data.synthetic import SyntheticConfig, generate

    start = time.perf_counter()
    sources = generate(work / "sources", SyntheticConfig(num_images=args.num_images, image_size=args.source_size))
    logger.info("synthetic sources: %s (%.0f s)", sources, time.perf_counter() - start)
    configs = sorted({prepared_config_for(size) for size in args.sizes}) if "prepared" in args.sources else []
    build_seconds = build_prepared(sources, work / "tfds", configs)

    results, images = [], {}
    for size in args.sizes:
        for source in args.sources:
            data = ({"data": str(sources), "masks": str(sources / "masks")} if source == "png" else
                    {"data": f"tfds:nih_cxr14/{prepared_config_for(size)}", "tfds_data_dir": str(work / "tfds")})
            datasets = {}
            for mode in args.modes:
                config = PipelineConfig(mask=mode, image_size=size, batch_size=args.batch_size, augment=args.augment,
                                        **data)
                records = load_records(config)
                images[source] = len(split_records(records, "train"))
                datasets[mode] = make_dataset(config, "train", records)
                for _ in datasets[mode]:  # warm-up pass: tracing, file cache
                    pass
            # Rounds over all modes, so a change in machine load hits every mode alike; the median is reported.
            # Each round starts one mode later, so no mode always runs first or after the same one.
            rates, counts = {mode: [] for mode in args.modes}, dict.fromkeys(args.modes, 0)
            cpu_ms = {mode: [] for mode in args.modes}
            for round_index in range(args.rounds):
                shift = round_index % len(args.modes)
                for mode in args.modes[shift:] + args.modes[:shift]:
                    rate, count, cpu = (time_steady(datasets[mode], args.min_seconds) if args.timing == "steady" else
                                        time_passes(datasets[mode], args.passes, args.min_seconds))
                    rates[mode].append(rate)
                    cpu_ms[mode].append(1e3 * cpu / count)
                    counts[mode] += count
            for mode in args.modes:
                rate = float(np.median(rates[mode]))
                row = {"source": source, "mask": mode, "image_size": size, "timing": args.timing,
                       "images_per_second": round(rate, 1),
                       "images_per_second_per_core": round(rate / cores(), 1), "images_timed": counts[mode],
                       "rounds_images_per_second": [round(r, 1) for r in rates[mode]],
                       "cpu_ms_per_image": round(float(np.median(cpu_ms[mode])), 3),
                       "rounds_cpu_ms_per_image": [round(c, 3) for c in cpu_ms[mode]]}
                if source == "prepared":
                    row["prepared_config"] = prepared_config_for(size)
                results.append(row)
                logger.info("%-8s %-8s %4d px: %7.1f images/s (rounds %s)", source, mode, size, rate,
                            row["rounds_images_per_second"])
    return results, images, build_seconds


def summarise(results):
    """Ratios the targets are stated in, per size: prepared mode / prepared original and prepared mode / png mode.

    `<mode>_vs_original` is the median over rounds of the ratio within each round (the two were timed seconds
    apart, so a change of machine speed between rounds cancels), with every round's ratio beside it; `_vs_png`
    is the ratio of the medians.
    """
    rows = {(r["source"], r["mask"], r["image_size"]): r for r in results}
    summary = {}
    for (source, mode, size), row in rows.items():
        if source != "prepared":
            continue
        entry = summary.setdefault(str(size), {})
        original = rows.get(("prepared", "original", size))
        if original is not None:
            ratios = np.asarray(row["rounds_images_per_second"]) / np.asarray(original["rounds_images_per_second"])
            entry[f"{mode}_vs_original"] = round(float(np.median(ratios)), 3)
            entry[f"{mode}_vs_original_rounds"] = [round(float(r), 3) for r in ratios]
            if "rounds_cpu_ms_per_image" in row:  # CPU time per image, original's over this mode's (>1: cheaper)
                cpu = np.asarray(original["rounds_cpu_ms_per_image"]) / np.asarray(row["rounds_cpu_ms_per_image"])
                entry[f"{mode}_vs_original_cpu"] = round(float(np.median(cpu)), 3)
        if ("png", mode, size) in rows:
            entry[f"{mode}_vs_png"] = round(row["images_per_second"] / rows[("png", mode, size)]["images_per_second"], 1)
    return summary


def print_table(results, sizes, modes):
    rate = {(r["source"], r["mask"], r["image_size"]): r["images_per_second"] for r in results}
    header = f"{'mask':<10}" + "".join(f"{f'png {s}':>11}{f'prep {s}':>11}{'x':>7}" for s in sizes)
    print(f"\n{header}   (images/s; x = prepared / png)")
    for mode in modes:
        cells = []
        for size in sizes:
            png, prepared = rate.get(("png", mode, size)), rate.get(("prepared", mode, size))
            ratio = f"{prepared / png:.1f}" if png and prepared else "-"
            cells.append(f"{png or 0:>11.1f}{prepared or 0:>11.1f}{ratio:>7}")
        print(f"{mode:<10}" + "".join(cells))


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="tfcxr-bench-pipeline-") as temp:
        work = args.work_dir or pathlib.Path(temp)
        results, images, build_seconds = run(args, work)
    report = {
        "data": f"tfcxr.data.synthetic, {args.num_images} images at {args.source_size} px, with their masks",
        "split": "train",
        "n": images,
        "batch_size": args.batch_size,
        "augment": args.augment,
        "timing": args.timing,
        "passes": args.passes,
        "min_seconds": args.min_seconds,
        "rounds": args.rounds,
        "sources": args.sources,
        "machine": f"{platform.machine()}, {cores()} CPU cores, {platform.platform()}",
        "prepared_build_seconds": build_seconds,
        "summary": summarise(results),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(results, args.sizes, args.modes)
    print(f"n = {images} training images; {report['machine']}\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
