"""Serving benchmark: latency p50/p95 and throughput of the exported classifier, one run for every runtime.

For each backbone (random weights, ``weights="none"``) it writes a run directory, exports it, and times
``predict_images`` (float input) on:

- ``tf-savedmodel``: the SavedModel loaded with ``tf.saved_model.load`` (what TF Serving runs);
- ``onnxruntime``: the ONNX export on onnxruntime's CPU provider;
- ``tensorrt-fp16``: the TensorRT engine, where ``tensorrt`` and a GPU exist (else reported as unavailable);

plus ``e2e-bytes+segmenter``: the ``serving_default`` bytes signature of an ``--embed-segmenter`` export
(PNG decode -> LiteMedSAM lung mask -> loose masking -> resize -> classifier) on PNG files of
``--source-size`` pixels.

    python benchmarks/serving.py --backbones resnet50 tiny --image-size 224 --batch-sizes 1 32

Prints a table and writes JSON (default ``benchmarks/results/serving.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import platform
import tempfile
import time

import numpy as np

from tfcxr.segment.presets import DEFAULT_PRESET

logger = logging.getLogger("benchmarks.serving")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "tiny"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--iterations", type=int, default=20, help="timed calls per (runtime, batch)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--segmenter", default=DEFAULT_PRESET,
                        help="embedded segmenter: a preset name (default %(default)s; litemedsam: zero-shot) or a dir")
    parser.add_argument(
        "--e2e", action=argparse.BooleanOptionalAction, default=True, help="also time the embedded-segmenter graph"
    )
    parser.add_argument("--e2e-iterations", type=int, default=3, help="timed calls for the end-to-end graph")
    parser.add_argument("--source-size", type=int, default=512, help="side of the PNGs sent to the e2e graph")
    parser.add_argument("--out", default="benchmarks/results/serving.json")
    return parser


def time_calls(fn, iterations, warmup):
    """Run `fn` warmup + iterations times; return per-call wall times in ms (timed calls only)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return np.asarray(times)


def summarize(times_ms, batch):
    return {
        "p50_ms": float(np.percentile(times_ms, 50)),
        "p95_ms": float(np.percentile(times_ms, 95)),
        "images_per_s": float(batch * 1e3 / np.mean(times_ms)),
        "iterations": int(len(times_ms)),
    }


def write_run(rundir, backbone, image_size, mask):
    """A run directory (`tfcxr.rundir.RunDir`: config and model) with a random-weight classifier."""
    import yaml

    from tfcxr.models import build_classifier
    from tfcxr.rundir import RunDir

    run = RunDir(rundir)
    run.path.mkdir(parents=True, exist_ok=True)
    build_classifier(backbone, image_size, weights="none").save(run.model_path)
    config = {"backbone": backbone, "image_size": image_size, "mask": mask, "margin": 0.05, "fill": "zero"}
    run.config_path.write_text(yaml.safe_dump(config))
    return run.path


def synthetic_pngs(count, size, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        image = cv2.GaussianBlur(rng.integers(0, 255, (size, size), dtype=np.uint8), (0, 0), size / 64)
        out.append(cv2.imencode(".png", image)[1].tobytes())
    return out


def bench_backbone(args, backbone, work, segmenter):
    import tensorflow as tf

    from tfcxr.export import onnx as onnx_export
    from tfcxr.export import tensorrt as trt_export
    from tfcxr.export.savedmodel import export_savedmodel

    size = args.image_size
    run = write_run(work / f"run-{backbone}", backbone, size, mask="loose")
    version_dir = export_savedmodel(run, work / "models", model_name=backbone)
    onnx_path = onnx_export.export_onnx(run, work / "onnx", model_name=backbone)
    e2e_dir = None
    if segmenter is not None:
        e2e_dir = export_savedmodel(run, work / "models", model_name=f"{backbone}-e2e", segmenter=segmenter)
    loaded = tf.saved_model.load(str(version_dir))
    predict_images = loaded.signatures["predict_images"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    runner, trt_note = None, None
    try:
        engine = trt_export.build_engine(onnx_path, work / f"{backbone}.fp16.engine", size, "fp16",
                                         batch_sizes=(1, 16, max(32, max(args.batch_sizes))))
        runner = trt_export.EngineRunner(engine)
    except (ImportError, RuntimeError) as err:
        trt_note = str(err).split(";")[0]
    rows = []
    rng = np.random.default_rng(0)
    for batch in args.batch_sizes:
        images = rng.random((batch, size, size, 1), np.float32)
        tensor = tf.constant(images)
        runtimes = {
            "tf-savedmodel": lambda: predict_images(images=tensor)["probabilities"].numpy(),
            "onnxruntime": lambda: session.run(["probabilities"], {"images": images}),
        }
        if runner is not None:
            runtimes["tensorrt-fp16"] = lambda: runner(images)
        for runtime, fn in runtimes.items():
            logger.info("%s %s batch %d", backbone, runtime, batch)
            rows.append(dict(model=backbone, image_size=size, runtime=runtime, batch=batch,
                             **summarize(time_calls(fn, args.iterations, args.warmup), batch)))
        if runner is None:
            rows.append(dict(model=backbone, image_size=size, runtime="tensorrt-fp16", batch=batch,
                             unavailable=trt_note))
    if runner is not None:
        runner.close()
    if e2e_dir is not None:
        serve = tf.saved_model.load(str(e2e_dir)).signatures["serving_default"]
        pngs = synthetic_pngs(max(args.batch_sizes), args.source_size)
        for batch in args.batch_sizes:
            data = tf.constant(pngs[:batch])
            logger.info("%s e2e batch %d", backbone, batch)
            times = time_calls(lambda: serve(image_bytes=data)["probabilities"].numpy(), args.e2e_iterations, 1)
            rows.append(dict(model=backbone, image_size=size, runtime="e2e-bytes+segmenter", batch=batch,
                             segmenter=args.segmenter, source_size=args.source_size, **summarize(times, batch)))
    return rows


def print_table(rows):
    header = f"{'model':<10} {'size':>4} {'runtime':<22} {'batch':>5} {'p50 ms':>9} {'p95 ms':>9} {'img/s':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if "unavailable" in r:
            print(f"{r['model']:<10} {r['image_size']:>4} {r['runtime']:<22} {r['batch']:>5}   unavailable: "
                  f"{r['unavailable'][:60]}")
        else:
            print(f"{r['model']:<10} {r['image_size']:>4} {r['runtime']:<22} {r['batch']:>5} {r['p50_ms']:>9.1f} "
                  f"{r['p95_ms']:>9.1f} {r['images_per_s']:>8.1f}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import tensorflow as tf

    segmenter = None
    if args.e2e:
        from tfcxr.export.segmenter import load_serving_segmenter

        segmenter = load_serving_segmenter(args.segmenter)
    load_before = os.getloadavg()
    rows = []
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tfcxr-bench-") as tmp:
        for backbone in args.backbones:
            rows.extend(bench_backbone(args, backbone, pathlib.Path(tmp), segmenter))
            result = {  # rewritten after each backbone, so a long run keeps what it measured
                "machine": {
                    "platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                    "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                    "tf_num_intraop_threads": os.environ.get("TF_NUM_INTRAOP_THREADS"),
                },
                "settings": vars(args),
                "results": rows,
            }
            out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(rows)
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
