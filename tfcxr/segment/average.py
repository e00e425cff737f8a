"""Average the weights of several epoch checkpoints of a fine-tuning run into one segmenter.

With a constant learning rate the weights of successive epochs wander around a minimum and the per-epoch
validation Dice goes up and down with them; the mean of the last few epochs' weights tends to sit nearer the
centre and to score better than any single epoch (stochastic weight averaging, Izmailov et al. 2018). The
checkpoints are the ones ``tfcxr.segment.finetune`` keeps in ``RUN/checkpoints`` (``keep_checkpoints`` of them,
numbered by epoch). The result is saved like a fine-tuned model, with the run's prior boxes, so
``load_segmenter(OUT)``, ``tfcxr.segment.predict`` and ``tfcxr.segment.evaluate`` take it as it is.

Usage::

    python -m tfcxr.segment.average runs/seg --last 3 --out runs/seg_avg
    python -m tfcxr.segment.average runs/seg --epochs 8 11 12 --out runs/seg_avg
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib

import numpy as np

from tfcxr import cli


logger = logging.getLogger(__name__)


def kept_epochs(run_dir) -> list[int]:
    """Epoch numbers of the checkpoints kept in ``run_dir/checkpoints``, ascending."""
    directory = pathlib.Path(run_dir) / "checkpoints"
    return sorted(int(p.name[len("ckpt-"):-len(".index")]) for p in directory.glob("ckpt-*.index"))


def checkpoint_path(run_dir, epoch: int) -> str:
    """The prefix of one epoch's checkpoint in ``run_dir/checkpoints`` (``tf.train.CheckpointManager`` naming)."""
    return str(pathlib.Path(run_dir) / "checkpoints" / f"ckpt-{epoch}")


def checkpoint_paths(run_dir, epochs=None, last: int = 0) -> list[str]:
    """Checkpoint prefixes to average: the named ``epochs``, or the ``last`` N kept ones.

    Raises:
        ValueError: naming the run and the kept epochs, when a named epoch is not kept, fewer than 2 checkpoints
            would be averaged, or both or neither of ``epochs`` and ``last`` are given.
    """
    run_dir = pathlib.Path(run_dir)
    kept = kept_epochs(run_dir)
    if bool(epochs) == bool(last):
        raise ValueError("Give either `epochs` or `last`, not both or neither. "
                         f"Received: epochs={epochs}, last={last}")
    if epochs:
        missing = sorted(set(epochs) - set(kept))
        if missing:
            raise ValueError(f"{run_dir / 'checkpoints'}: no checkpoint for epochs {missing}; kept epochs: {kept}")
        chosen = sorted(set(epochs))
    else:
        chosen = kept[-last:]
    if len(chosen) < 2:
        raise ValueError(f"{run_dir / 'checkpoints'}: averaging needs at least 2 checkpoints; "
                         f"kept epochs: {kept}, chosen: {chosen}")
    return [checkpoint_path(run_dir, epoch) for epoch in chosen]


def average_checkpoints(model, paths) -> None:
    """Set ``model``'s weights to the element-wise mean of the checkpoints at ``paths`` (in place).

    Args:
        model: a ``SamLungModel`` of the architecture the checkpoints were written from (e.g. the run's saved model).
        paths: checkpoint prefixes written by ``tfcxr.segment.finetune`` (``.../checkpoints/ckpt-N``).

    Raises:
        ValueError: naming the checkpoint, when it does not match the model.
    """
    import tensorflow as tf

    variables = list(model.variables)  # SamLungModel is a tf.Module: every variable once, in a fixed order
    checkpoint = tf.train.Checkpoint(image_encoder=model.image_encoder, prompt_encoder=model.prompt_encoder,
                                     mask_decoder=model.mask_decoder)
    sums = None
    for path in paths:
        try:
            checkpoint.read(path).assert_existing_objects_matched().expect_partial()
        except (ValueError, AssertionError, tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as err:
            raise ValueError(f"{path}: checkpoint does not match the model ({str(err).splitlines()[0]})") from err
        values = [v.numpy().astype(np.float64) for v in variables]
        sums = values if sums is None else [s + v for s, v in zip(sums, values)]
    for variable, total in zip(variables, sums):
        variable.assign((total / len(paths)).astype(variable.dtype.as_numpy_dtype))


def average_run(run_dir, out, epochs=None, last: int = 0) -> dict:
    """Average checkpoints of the run in ``run_dir`` and save the segmenter to ``out``; returns a summary dict.

    ``out`` gets ``segmenter.json`` (with the run's priors and inference settings) + weights, and ``averaged.json``
    (the source run and the averaged checkpoints).
    """
    from .loading import load_segmenter
    from .segmenter_format import save_segmenter

    run_dir, out = pathlib.Path(run_dir), pathlib.Path(out)
    paths = checkpoint_paths(run_dir, epochs, last)
    if out.resolve() == run_dir.resolve():
        raise ValueError(f"{out}: write the average to a new folder, not over the run it is taken from")
    model = load_segmenter(str(run_dir))
    average_checkpoints(model, paths)
    save_segmenter(model, out)
    summary = {"run": str(run_dir), "checkpoints": [pathlib.Path(p).name for p in paths],
               "epochs": [int(pathlib.Path(p).name.split("-")[1]) for p in paths]}
    (out / "averaged.json").write_text(json.dumps(summary, indent=2))
    logger.info("Averaged %s of %s into %s", summary["checkpoints"], run_dir, out)
    return summary


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of `python -m tfcxr.segment.average`."""
    parser = argparse.ArgumentParser(prog="python -m tfcxr.segment.average", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="fine-tuning output folder (with checkpoints/ and a saved model)")
    parser.add_argument("--out", required=True, help="folder for the averaged segmenter")
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--last", type=int, default=0, help="average the last N kept checkpoints")
    choice.add_argument("--epochs", type=int, nargs="+", help="average the checkpoints of these epochs")
    return cli.add_log_level(parser)


def main(argv=None) -> int:
    """Run `python -m tfcxr.segment.average` with `argv` (default: sys.argv); returns the exit status."""
    args = build_parser().parse_args(argv)
    return cli.run(lambda a: print(json.dumps(average_run(a.run, a.out, a.epochs, a.last), indent=2)), args, logger)


if __name__ == "__main__":
    raise SystemExit(main())
