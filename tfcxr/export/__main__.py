"""CLI: ``python -m tfcxr.export RUNDIR --format savedmodel|onnx|tensorrt --out DIR``.

Examples:
    python -m tfcxr.export runs/loose --format savedmodel --out export/models --model-name cxr_loose
    python -m tfcxr.export runs/loose --format savedmodel --out export/models --embed-segmenter
    python -m tfcxr.export runs/loose --format onnx --out export/onnx
    python -m tfcxr.export runs/loose --format tensorrt --out export/trt --precision fp16
"""

from __future__ import annotations

import argparse
import logging

from tfcxr import cli
from tfcxr.segment.presets import DEFAULT_PRESET

logger = logging.getLogger("tfcxr.export")

FORMATS = ("savedmodel", "onnx", "tensorrt")
ONNX_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of `python -m tfcxr.export`."""
    from tfcxr.export.tensorrt import PRECISIONS

    parser = argparse.ArgumentParser(prog="python -m tfcxr.export", description=__doc__.split("\n")[0])
    parser.add_argument("rundir", help="run directory written by `python -m tfcxr.train` (config.yaml + best.keras)")
    parser.add_argument("--format", choices=FORMATS, default="savedmodel", help="what to export (default savedmodel)")
    parser.add_argument("--out", required=True, help="output folder (TF Serving model base path for savedmodel)")
    parser.add_argument("--model-name", default="tfcxr", help="TF Serving model name / file stem (default tfcxr)")
    parser.add_argument("--version", type=int, default=None, help="SavedModel version (default: latest + 1)")
    parser.add_argument(
        "--embed-segmenter", action=argparse.BooleanOptionalAction, default=False,
        help="savedmodel: put the lung segmenter and masking in the serving graph (clients send only the X-ray)",
    )
    parser.add_argument(
        "--reject-non-cxr", action=argparse.BooleanOptionalAction, default=False,
        help="with --embed-segmenter: fail requests whose image the segmenter's CXR gate scores below its "
             "threshold (otherwise the gate's in_distribution and is_cxr are only outputs)",
    )
    parser.add_argument(
        "--segmenter", default=DEFAULT_PRESET,
        help=f"segmenter for --embed-segmenter: a preset name or a saved model dir (default {DEFAULT_PRESET})",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16", help="tensorrt precision (default fp16)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs=3, default=(1, 16, 32), metavar=("MIN", "OPT", "MAX"),
        help="tensorrt dynamic batch profile (default 1 16 32)",
    )
    parser.add_argument(
        "--calibration-images", type=int, default=256,
        help="tensorrt int8: number of training-split images for calibration (default 256)",
    )
    parser.add_argument(
        "--check", action=argparse.BooleanOptionalAction, default=True,
        help="onnx/tensorrt: check parity against the TF graph on random images (default on)",
    )
    return cli.add_log_level(parser)


def _reference(rundir, images):
    """Outputs of the TF float graph (classifier + No Finding score) on `images`, as numpy."""
    from tfcxr.export.onnx import classifier_function
    from tfcxr.export.savedmodel import load_classifier, read_run

    info = read_run(rundir)
    classify, _ = classifier_function(load_classifier(info), info)
    return {name: value.numpy() for name, value in classify(images).items()}


def _random_images(image_size, count=4, seed=0):
    import numpy as np

    return np.random.default_rng(seed).random((count, image_size, image_size, 1), dtype=np.float32)


def main(argv=None) -> int:
    """Run `python -m tfcxr.export` with `argv` (default: sys.argv); returns the exit status."""
    args = build_parser().parse_args(argv)
    return cli.run(_main, args, logger)


def _main(args) -> int:
    from tfcxr.export.savedmodel import read_run

    info = read_run(args.rundir)
    if args.format == "savedmodel":
        from tfcxr.export.savedmodel import export_savedmodel

        segmenter = None
        if args.embed_segmenter:
            from tfcxr.export.segmenter import load_serving_segmenter

            segmenter = load_serving_segmenter(args.segmenter, reject_non_cxr=args.reject_non_cxr)
        path = export_savedmodel(args.rundir, args.out, args.model_name, args.version, segmenter=segmenter)
    elif args.format == "onnx":
        from tfcxr.export.onnx import export_onnx, max_abs_diff, run_onnx

        path = export_onnx(args.rundir, args.out, args.model_name, opset=args.opset)
        if args.check:
            images = _random_images(info.image_size)
            diff = max_abs_diff(run_onnx(path, images), _reference(args.rundir, images))
            logger.info("ONNX parity vs TF (onnxruntime CPU, 4 random images): %s", diff)
            if max(diff.values()) >= ONNX_TOLERANCE:
                logger.error("ONNX parity failed: max abs diff %s >= %g", diff, ONNX_TOLERANCE)
                return 1
    else:
        from tfcxr.export.tensorrt import EngineRunner, compare, export_tensorrt

        calibration = None
        if args.precision == "int8":
            from tfcxr.export.tensorrt import training_sample

            calibration = training_sample(args.rundir, args.calibration_images)
        path = export_tensorrt(
            args.rundir, args.out, args.model_name, args.precision, tuple(args.batch_sizes), calibration,
            calibration_batches_count=max(1, args.calibration_images // args.batch_sizes[1]),
        )
        if args.check:
            images = _random_images(info.image_size, count=args.batch_sizes[1])
            runner = EngineRunner(path)
            try:
                result = compare(runner(images)["probabilities"], _reference(args.rundir, images)["probabilities"])
            finally:
                runner.close()
            logger.info("TensorRT %s parity vs TF: %s", args.precision, result)
            if args.precision != "int8" and (result["max_abs_diff"] >= FP16_TOLERANCE
                                             or result["top_label_agreement"] < 1.0):
                logger.error("TensorRT parity failed: %s (tolerance %g)", result, FP16_TOLERANCE)
                return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
