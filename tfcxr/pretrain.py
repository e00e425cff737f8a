"""Self-supervised pretraining of a classifier backbone on unlabelled chest X-rays: `python -m tfcxr.pretrain`.

    python -m tfcxr.pretrain --images DIR [DIR ...] --backbone tiny --out runs/pretrain_tiny \\
        [--exclude-split-of configs/paper_small_nih.yaml] [--masks MASKDIR --mask tight]
    python -m tfcxr.train --backbone tiny --weights runs/pretrain_tiny/backbone.weights.h5 ...

This module owns the run: its settings (`PretrainConfig`, `resolve_pretrain_config`), the
output directory and resuming, the training loop and the CLI. The parts it runs:
    `tfcxr.pretrain_images`  which images are used (exclusion lists, held-out split patients, masks);
    `tfcxr.pretrain_views`   the two random views per image, as a tf.data pipeline;
    `tfcxr.simsiam`          the SimSiam model and loss (method, and why SimSiam).

Output directory (rerun the same command to resume; `epochs` may grow):

    OUT/config.yaml               resolved PretrainConfig
    OUT/images.csv                image_path, image_id, patient_id of every image used
    OUT/checkpoints/              BackupAndRestore state (weights and optimizer)
    OUT/history.csv               per epoch (0-based): loss, z_std, seconds, cpu_seconds
    OUT/backbone.weights.h5       the backbone's weights, for `tfcxr.train --weights PATH`
    OUT/backbone.json             their metadata: backbone, image size, method, images, cost

Exit status: 0 on success, 2 for bad arguments or inputs (one line naming the file).
"""

import argparse
import dataclasses
import logging
import math
import os
import pathlib
import sys
import time

from tfcxr import cli
from tfcxr.config import PRECISIONS, read_yaml_mapping
from tfcxr.mask_options import DEFAULT_MARGIN, FILL_MODES, MASK_MODES, parse_margin, validate_fill, validate_mask_mode
from tfcxr.models.presets import BACKBONES, get_preset
from tfcxr.pretrain_images import select_images
from tfcxr.pretrain_views import make_dataset
from tfcxr.simsiam import METHOD, build_simsiam

logger = logging.getLogger("tfcxr.pretrain")

WEIGHTS_NAME = "backbone.weights.h5"
# Fields that may change when a run is resumed in the same directory.
_RESUMABLE_CHANGES = ("epochs", "out")


@dataclasses.dataclass
class PretrainConfig:
    """One pretraining run.

    Attributes:
        images: folder or list of folders searched recursively for PNG/JPEG X-rays.
        out: output directory (default runs/pretrain-<backbone>).
        backbone: a name from `tfcxr.models.presets.BACKBONES`.
        image_size: input S (S x S); use the classifier's `image_size`.
        epochs: total epochs (a resumed run continues to this count).
        batch_size: images per step (each gives two views).
        learning_rate: peak SGD learning rate (cosine decay to 0 over the run).
        momentum: SGD momentum.
        weight_decay: decoupled weight decay.
        projection_dim: width of the projection MLP (3 layers, BN).
        predictor_dim: bottleneck of the predictor MLP (2 layers).
        min_crop_scale: smallest crop area fraction of the random resized crop, in (0, 1].
        flip: random horizontal flips.
        masks: lung mask folder MASKDIR/<stem>.png; needed unless mask=original.
        mask: a mode from `tfcxr.mask_options.MASK_MODES` applied before the views.
        margin: loose/box margin: fraction of image width or "11px".
        fill: background fill, `zero` or `mean`.
        skip_missing_masks: leave out images without a mask file instead of failing.
        exclude_list: text file of image stems or patient ids to leave out (one per line, # comments).
        exclude_split_of: a `tfcxr.train` or `tfcxr.experiment` YAML whose split defines the patients to leave out.
        exclude_splits: splits of `exclude_split_of` left out (default the test split).
        metadata: CSVs with `Image Index` and `Patient ID` columns (patients of non-NIH file names).
        max_images: use at most this many images (after exclusion; None = all).
        cache: keep the decoded, resized images in memory.
        seed: global seed (Keras, shuffling, views).
        precision: `auto` (mixed_float16 on GPU, float32 on CPU), `float32`, `mixed_float16`.
    """

    images: tuple = ()
    out: str = None
    backbone: str = "tiny"
    image_size: int = 96
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    projection_dim: int = 256
    predictor_dim: int = 64
    min_crop_scale: float = 0.35
    flip: bool = False
    masks: str = None
    mask: str = "original"
    margin: object = DEFAULT_MARGIN
    fill: str = "zero"
    skip_missing_masks: bool = False
    exclude_list: str = None
    exclude_split_of: str = None
    exclude_splits: tuple = ("test",)
    metadata: tuple = ()
    max_images: int = None
    cache: bool = True
    seed: int = 0
    precision: str = "auto"

    def __post_init__(self):
        self.images = (self.images,) if isinstance(self.images, (str, os.PathLike)) else tuple(map(str, self.images))
        self.metadata = (self.metadata,) if isinstance(self.metadata, str) else tuple(map(str, self.metadata or ()))
        self.exclude_splits = (self.exclude_splits,) if isinstance(self.exclude_splits, str) else tuple(
            self.exclude_splits or ())
        if not self.images:
            raise ValueError("`images` must name at least one folder. Received: images=()")
        get_preset(self.backbone)
        validate_mask_mode(self.mask)
        validate_fill(self.fill)
        parse_margin(self.margin)
        if self.mask != "original" and not self.masks:
            raise ValueError(f"mask={self.mask!r} needs a mask folder (`masks`). Received: masks={self.masks!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {PRECISIONS}. Received: precision={self.precision!r}")
        for name in ("image_size", "epochs", "batch_size", "projection_dim", "predictor_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be >= 1. Received: {name}={getattr(self, name)!r}")
        if not 0 < float(self.min_crop_scale) <= 1:
            raise ValueError(f"`min_crop_scale` must be in (0, 1]. Received: min_crop_scale={self.min_crop_scale!r}")
        if not float(self.learning_rate) > 0:
            raise ValueError(f"`learning_rate` must be > 0. Received: learning_rate={self.learning_rate!r}")
        bad = sorted(set(self.exclude_splits) - {"train", "validation", "test"})
        if bad:
            raise ValueError(f"`exclude_splits` must be among ('train', 'validation', 'test'). Received: {bad}")
        if self.max_images is not None and int(self.max_images) < 1:
            raise ValueError(f"`max_images` must be >= 1 or None. Received: max_images={self.max_images!r}")

    def to_dict(self):
        """Plain dict (YAML-safe: tuples become lists)."""
        out = dataclasses.asdict(self)
        for key in ("images", "metadata", "exclude_splits"):
            out[key] = list(out[key])
        return out


FIELDS = tuple(field.name for field in dataclasses.fields(PretrainConfig))


def resolve_pretrain_config(config_path=None, overrides=None):
    """Defaults < YAML file < overrides (None values ignored); errors name the file.

    Returns:
        `PretrainConfig`.
    """
    values = read_yaml_mapping(config_path) if config_path else {}
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"{config_path}: unknown config key(s) {unknown}. Known keys: {', '.join(FIELDS)}")
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    try:
        return PretrainConfig(**values)
    except (TypeError, ValueError) as error:
        where = f"{config_path}: " if config_path else ""
        raise ValueError(f"{where}{error}") from None


# ----------------------------------------------------------------------------- run


def _check_resume(out, config):
    """True when `out` holds a resumable run of the same config; ValueError naming the file otherwise."""
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return False
    saved = PretrainConfig(**read_yaml_mapping(saved_path)).to_dict()
    new = config.to_dict()
    changed = [key for key in new if key not in _RESUMABLE_CHANGES and saved.get(key) != new[key]]
    if changed:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {new[key]!r}" for key in changed)
        raise ValueError(f"{saved_path}: this directory holds a pretraining run with a different config ({details}). "
                         "Use a new --out, or the same settings to resume.")
    return (out / "checkpoints").is_dir()


def _epoch_logger():
    import keras

    class EpochLog(keras.callbacks.Callback):
        """Adds wall and process CPU seconds to the epoch logs and logs one line per epoch (before CSVLogger)."""

        def on_epoch_begin(self, epoch, logs=None):
            self._wall, self._cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            logs["seconds"] = time.perf_counter() - self._wall
            logs["cpu_seconds"] = time.process_time() - self._cpu
            logger.info("epoch %d: loss %.4f, z_std %.3f (1 healthy, 0 collapsed), %.1f s (%.1f CPU s)", epoch + 1,
                        logs.get("loss", math.nan), logs.get("z_std", math.nan), logs["seconds"], logs["cpu_seconds"])

    return EpochLog()


def pretrain(config):
    """Run (or resume) one pretraining job and write the output directory.

    Returns:
        dict with out, weights (path), images, epochs_run, loss, z_std, seconds, cpu_seconds.
    """
    import keras

    from tfcxr.models.backbones import save_backbone_weights
    from tfcxr.train import device_and_strategy

    out, frame, resumed = _open_run(config)
    keras.utils.set_random_seed(config.seed)
    strategy, device, precision = device_and_strategy(config.precision)
    logger.info("device: %s, precision: %s", device, precision)
    dataset = make_dataset(frame, config)
    steps = len(frame) // int(config.batch_size)
    model, backbone = _compiled_simsiam(config, steps, strategy)
    logger.info("SimSiam on %s: %d parameters (backbone %d), %d steps per epoch", config.backbone,
                model.count_params(), backbone.count_params(), steps)
    _fit(model, dataset, config, out, resumed)
    metadata = _backbone_metadata(config, frame, out, device, precision)
    weights, _ = save_backbone_weights(backbone, out / WEIGHTS_NAME, metadata)
    logger.info("wrote %s (use: python -m tfcxr.train --backbone %s --weights %s)", weights, config.backbone, weights)
    return {"out": str(out), "weights": weights, **{k: metadata[k] for k in (
        "images", "epochs_run", "loss", "z_std", "seconds", "cpu_seconds")}}


def _open_run(config):
    """Check a resume, select the images and write config.yaml and images.csv; returns (out, frame, resumed)."""
    out = pathlib.Path(config.out or f"runs/pretrain-{config.backbone}")
    config.out = str(out)
    resumed = _check_resume(out, config)
    frame = select_images(config)
    out.mkdir(parents=True, exist_ok=True)
    _write_yaml(config.to_dict(), out / "config.yaml")
    frame[["image_path", "image_id", "patient_id"]].to_csv(out / "images.csv", index=False)
    logger.info("%s: %d images from %d patients (excluded: %s)%s", out, len(frame),
                _count_patients(frame), frame.attrs["excluded"] or "none",
                " (resuming)" if resumed else "")
    return out, frame, resumed


def _compiled_simsiam(config, steps, strategy):
    """SimSiam model and backbone built under `strategy`, compiled with SGD and a cosine decay over the run."""
    import keras

    with strategy.scope():
        model, backbone = build_simsiam(config)
        schedule = keras.optimizers.schedules.CosineDecay(float(config.learning_rate), steps * int(config.epochs))
        model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=float(config.momentum),
                                                     weight_decay=float(config.weight_decay)))
    return model, backbone


def _fit(model, dataset, config, out, resumed):
    """Fit up to `config.epochs`, logging to history.csv and checkpointing to checkpoints/ (resumed from there)."""
    import keras

    callbacks = [
        _epoch_logger(),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=resumed),
        keras.callbacks.BackupAndRestore(str(out / "checkpoints"), delete_checkpoint=False),
    ]
    try:
        model.fit(dataset, epochs=int(config.epochs), callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2,
                  shuffle=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _backbone_metadata(config, frame, out, device, precision):
    """backbone.json's content: the backbone and its input, the method, the images, and the cost from history.csv."""
    import pandas as pd

    history = pd.read_csv(out / "history.csv") if (out / "history.csv").is_file() else pd.DataFrame()
    last = history.iloc[-1].to_dict() if len(history) else {}
    return {
        "backbone": config.backbone,
        "image_size": int(config.image_size),
        "channels": get_preset(config.backbone)["channels"],
        "preprocessing": get_preset(config.backbone)["preprocessing"],
        "input": "gray (S, S, 1) float32 in [0, 1], through CxrPreprocessor",
        "method": METHOD,
        "mask": config.mask,
        "images": len(frame),
        "patients": int(_count_patients(frame)),
        "excluded": frame.attrs["excluded"],
        "epochs_run": int(len(history)),
        "loss": last.get("loss"),
        "z_std": last.get("z_std"),
        "seconds": float(history["seconds"].sum()) if "seconds" in history else None,
        "cpu_seconds": float(history["cpu_seconds"].sum()) if "cpu_seconds" in history else None,
        "device": device,
        "precision": precision,
        "config": "config.yaml",
    }


def _count_patients(frame):
    return int(frame.loc[frame["patient_id"] != "", "patient_id"].nunique())


def _write_yaml(values, path):
    import yaml

    from tfcxr.atomic import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(values, sort_keys=False))


def build_parser():
    """The command-line parser of `python -m tfcxr.pretrain`."""
    parser = argparse.ArgumentParser(prog="python -m tfcxr.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=pathlib.Path, help="YAML config (flags override it), e.g. configs/pretrain_tiny_nih.yaml")
    parser.add_argument("--images", nargs="+", help="folder(s) of unlabelled PNG/JPEG X-rays (recursive)")
    parser.add_argument("--out", help="output directory (default runs/pretrain-<backbone>); rerun to resume")
    parser.add_argument("--backbone", choices=BACKBONES)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--projection-dim", type=int)
    parser.add_argument("--predictor-dim", type=int)
    parser.add_argument("--min-crop-scale", type=float)
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--masks", help="lung mask folder MASKDIR/<stem>.png (for --mask other than original)")
    parser.add_argument("--mask", choices=MASK_MODES, help="masking applied before the views (default original)")
    parser.add_argument("--margin", help="loose/box margin: fraction of width (0.05) or pixels (11px)")
    parser.add_argument("--fill", choices=FILL_MODES)
    parser.add_argument("--skip-missing-masks", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--exclude-list", help="file of image stems or patient ids to leave out")
    parser.add_argument("--exclude-split-of", help="tfcxr.train/tfcxr.experiment YAML whose split's patients are left out")
    parser.add_argument("--exclude-splits", nargs="+", choices=("train", "validation", "test"),
                        help="splits of --exclude-split-of left out (default test)")
    parser.add_argument("--metadata", nargs="+", help="CSV(s) with Image Index, Patient ID (patients of the images)")
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--cache", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--precision", choices=PRECISIONS)
    return cli.add_log_level(parser)


def main(argv=None) -> int:
    """Run `python -m tfcxr.pretrain` with `argv` (default: sys.argv); returns the exit status."""
    args = build_parser().parse_args(argv)
    return cli.run(_main, args, logger)


def _main(args) -> int:
    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "log_level") and v is not None}
    config = resolve_pretrain_config(args.config, overrides)
    result = pretrain(config)
    logger.info("done: %s (%d images, %d epochs, loss %.4f, z_std %.3f, %.0f CPU s)", result["weights"],
                result["images"], result["epochs_run"], result["loss"] if result["loss"] is not None else math.nan,
                result["z_std"] if result["z_std"] is not None else math.nan, result["cpu_seconds"] or 0.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
