"""Train a masked chest X-ray classifier: `python -m tfcxr.train --mask loose`.

With no other flag it generates the built-in synthetic demo set (under
demo_data/synthetic), uses its ground-truth lung masks and trains the tiny CNN
on CPU in a few minutes.

Run directory (the contract read by tfcxr.evaluate and tfcxr.export; its layout and readers
are `tfcxr.rundir.RunDir`)::

    RUNDIR/config.yaml            resolved config
    RUNDIR/best.keras             best model by validation macro AUROC
    RUNDIR/checkpoints/           BackupAndRestore state: rerun the same command to resume
    RUNDIR/history.csv            per-epoch metrics (epoch is 0-based)
    RUNDIR/tensorboard/
    RUNDIR/test_predictions.csv   image_id, patient_id, image_path, mask_path, y_<T>, y_No Finding, p_<T>
    RUNDIR/efficiency.json        seconds_per_epoch, train_images_per_second, epochs_run,
                                  best_epoch (1-based), device, precision

Exit status: 0 on success, 1 when training stopped on a NaN/Inf loss (best.keras
and checkpoints/ keep the last good epoch), 2 for bad arguments or inputs.
"""

import argparse
import dataclasses
import logging
import os
import pathlib
import sys
import time

import numpy as np

from tfcxr import cli
from tfcxr.callbacks import EpochTimer, MacroAUROC, NaNGuard, NaNLossError, tensorboard_callbacks
from tfcxr.config import DEMO, PRECISIONS, resolve_config
from tfcxr.evaluation.metrics import macro_auroc
from tfcxr.labels import TARGETS
from tfcxr.mask_options import FILL_MODES, MASK_MODES
from tfcxr.models.losses import LOSSES
from tfcxr.models.presets import BACKBONES
from tfcxr.rundir import MONITOR, RunDir
from tfcxr.scoring import NO_FINDING_METHODS

logger = logging.getLogger("tfcxr.train")

RUN_FILES = RunDir.FILES


def device_and_strategy(precision):
    """(distribution strategy, device description, precision) for `precision` ("auto" = mixed_float16 on GPU)."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if precision == "auto":
        precision = "mixed_float16" if gpus else "float32"
    keras.mixed_precision.set_global_policy(precision)
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        device = f"{len(gpus)} GPUs (MirroredStrategy)"
    else:
        strategy = tf.distribute.get_strategy()
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            device = f"GPU ({details.get('device_name', gpus[0].name)})"
        else:
            device = f"CPU ({os.cpu_count()} cores)"
    return strategy, device, precision


def resolve_data(config) -> tuple[str, str | None]:
    """The (data, masks) sources of a `TrainConfig`: generates the demo set when `data` is "demo" and missing,
    and defaults `masks` to the demo's ground-truth masks or to `<data>/masks` when that folder exists."""
    data, masks = config.data, config.masks
    if data == DEMO:
        from tfcxr.data.synthetic import SyntheticConfig, generate

        synthetic = SyntheticConfig(
            num_images=config.demo_num_images, image_size=config.demo_image_size, seed=config.seed
        )
        data = str(generate(config.demo_dir, synthetic))
        if masks is None:
            masks = str(pathlib.Path(data) / "masks")
            logger.info("data=demo: using the synthetic GROUND-TRUTH lung masks in %s (pass --masks DIR to change)", masks)
    elif masks is None and config.mask != "original" and (pathlib.Path(data) / "masks").is_dir():
        masks = str(pathlib.Path(data) / "masks")
        logger.info("--masks not given: using %s", masks)
    return data, masks


@dataclasses.dataclass
class _Data:
    """The records of a run and its three `tf.data` datasets."""

    parts: dict  # {split: records DataFrame}
    train: object
    validation: object
    test: object
    not_cxr: dict  # {split: images the mask QC flagged not_cxr}
    prepared: bool


def _open_run(config) -> tuple[RunDir, bool]:
    """Create (or reopen, after the resume check) the run directory of `config` and save its config.

    Raises:
        ValueError: the directory holds another config (`RunDir.check_resume`) or more trained epochs than
            ``config.epochs``.
    """
    out = pathlib.Path(config.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{config.backbone}-{config.mask}")
    config.out = str(out)
    run = RunDir(out)
    resumed = run.check_resume(config)
    run.check_not_longer(config)
    if run.is_complete() and int(run.config.epochs) != int(config.epochs):
        run.clear_results()  # trained on: complete again only when the longer run finishes
    out.mkdir(parents=True, exist_ok=True)
    run.save_config(config)
    logger.info("run directory: %s%s", out, " (resuming)" if resumed else "")
    return run, resumed


def _load_data(config) -> _Data:
    """Curated records, the patient-level splits and their datasets, as `tfcxr.data.pipeline` builds them."""
    from tfcxr.data.pipeline import PipelineConfig, make_dataset
    from tfcxr.data.records import load_records, split_records

    data, masks = resolve_data(config)
    pipeline = PipelineConfig(
        data=data, masks=masks, mask_spec=config.mask_spec, batch_size=config.batch_size, augment=config.augment,
        cache=config.cache, seed=config.seed, curation=config.curation(), tfds_data_dir=config.tfds_data_dir,
        exclude_not_cxr=config.exclude_not_cxr,
    )
    records = load_records(pipeline)
    parts = {split: split_records(records, split) for split in ("train", "validation", "test")}
    prepared = bool(records.attrs.get("prepared"))
    logger.info("data %s: %s images (train/validation/test), %s, masks=%s", data,
                "/".join(str(len(p)) for p in parts.values()), config.mask_spec,
                "stored with the images" if prepared else masks)
    return _Data(parts, *(make_dataset(pipeline, split, records) for split in ("train", "validation", "test")),
                 not_cxr=records.attrs.get("not_cxr", {}), prepared=prepared)


def _fit(config, run: RunDir, resumed: bool, model, data: _Data, callbacks, compile_model
         ) -> tuple[str, EpochTimer, MacroAUROC]:
    """Compile (`compile_model(model)`) and fit `model` with the run's callbacks.

    With `config.freeze_backbone_epochs` = N > 0 the fit has two phases (LP-FT), both at `config.learning_rate`:
    epochs 1..N with the backbone frozen, then the rest with it trainable, recompiled (a fresh optimizer: Keras
    warns "Skipping variable loading for optimizer" when the second phase restores the first phase's backup). A
    resumed run starts at the epoch of its `BackupAndRestore` backup and skips a first phase it has finished.

    Returns:
        ("ok" | "nan_loss", the epoch timer, the AUROC callback).
    """
    import keras

    from tfcxr.data.records import label_matrix
    from tfcxr.models import backbone_layer

    timer = EpochTimer()
    auroc = MacroAUROC(data.validation, label_matrix(data.parts["validation"]))
    checkpoint = keras.callbacks.ModelCheckpoint(str(run.model_path), monitor=MONITOR, mode="max",
                                                 save_best_only=True, verbose=0)
    best_value = run.best().value if resumed else None
    if best_value is not None:
        checkpoint.best = best_value
    history = keras.callbacks.CSVLogger(str(run.history_path), append=resumed)
    all_callbacks = [
        timer, auroc, checkpoint, history,
        *tensorboard_callbacks(run.tensorboard_path),
        keras.callbacks.BackupAndRestore(str(run.checkpoints_path), delete_checkpoint=False),
        NaNGuard(), *callbacks,
    ]
    frozen = int(config.freeze_backbone_epochs)
    phases = [(frozen, False), (int(config.epochs), True)] if frozen else [(int(config.epochs), True)]
    if frozen and resumed and run.epochs_backed_up() >= frozen:
        phases = phases[1:]  # the backbone-frozen phase is done
    try:
        for last_epoch, backbone_trainable in phases:
            if frozen:
                backbone_layer(model).trainable = backbone_trainable
                logger.info("up to epoch %d: %s", last_epoch,
                            "every layer" if backbone_trainable else "the head alone (backbone frozen)")
            compile_model(model)
            model.fit(data.train, epochs=last_epoch, callbacks=all_callbacks,
                      verbose=1 if sys.stdout.isatty() else 2, shuffle=False)
            history.append = True  # the next phase adds to the same history.csv
    except NaNLossError as error:
        logger.error("Training stopped: %s. Kept best.keras and checkpoints/ from the last good epoch in %s. "
                     "Try a lower --learning-rate or --precision float32.", error, run.path)
        return "nan_loss", timer, auroc
    return "ok", timer, auroc


def _efficiency(config, run: RunDir, data: _Data, timer, auroc, device, precision, status) -> dict:
    """The `efficiency.json` payload: seconds per epoch, images/s, epochs, device, image and not-CXR counts."""
    train_seconds = float(np.mean(timer.train_seconds)) if timer.train_seconds else float("nan")
    val_seconds = float(np.mean(auroc.seconds)) if auroc.seconds else 0.0
    return {
        "seconds_per_epoch": train_seconds + val_seconds,
        "train_images_per_second": len(data.parts["train"]) / train_seconds if timer.train_seconds else float("nan"),
        "epochs_run": run.epochs_run(),
        "best_epoch": run.best().epoch,
        "device": device,
        "precision": precision,
        "train_seconds_per_epoch": train_seconds,
        "validation_seconds_per_epoch": val_seconds,
        "epochs_timed": len(timer.train_seconds),
        "images": {split: len(part) for split, part in data.parts.items()},
        "not_cxr_flagged": data.not_cxr,
        "not_cxr_excluded": bool(config.exclude_not_cxr),
        "status": status,
    }


def _evaluate_test(run: RunDir, model, data: _Data) -> dict:
    """Predict the test split with best.keras (the final model when no best was saved); write the predictions."""
    import keras

    from tfcxr.data.records import label_matrix

    if not run.model_path.is_file():
        logger.warning("validation macro AUROC was never defined; saving the final model as %s", run.model_path)
        model.save(run.model_path)
    probs = keras.models.load_model(run.model_path).predict(data.test, verbose=0)
    run.write_predictions(data.parts["test"], probs)
    test_macro, per_class, reasons = macro_auroc(label_matrix(data.parts["test"]), probs, TARGETS)
    for name, reason in reasons.items():
        logger.warning("test AUROC of %s is undefined (%s)", name, reason)
    return {"test_macro_auroc": test_macro, "test_auroc": dict(zip(TARGETS, per_class))}


def train(config, callbacks=()):
    """Run one training job and write the run directory.

    Args:
        config: `TrainConfig`.
        callbacks: extra Keras callbacks (tests use them to inject failures).

    Returns:
        dict with `out`, `status` ("ok" or "nan_loss"), `test_macro_auroc`,
        `best_val_macro_auroc`, `best_epoch`.
    """
    import keras

    from tfcxr.data.records import label_matrix
    from tfcxr.models import build_classifier, compile_classifier

    keras.utils.set_random_seed(config.seed)
    run, resumed = _open_run(config)
    data = _load_data(config)
    strategy, device, precision = device_and_strategy(config.precision)
    logger.info("device: %s, precision: %s", device, precision)

    train_labels = label_matrix(data.parts["train"])  # (examples, 5), for `weighted_bce`

    def compile_model(m):  # in the strategy's scope; `_fit` calls it (again between the LP-FT phases)
        with strategy.scope():
            compile_classifier(m, config.loss, config.learning_rate, train_labels=train_labels)

    with strategy.scope():
        model = build_classifier(config.backbone, config.image_size, config.weights, dropout=config.dropout,
                                 bn_momentum=config.bn_momentum)
    logger.info("model %s: %d parameters", model.name, model.count_params())

    status, timer, auroc = _fit(config, run, resumed, model, data, callbacks, compile_model)
    best = run.best()
    result = {"out": str(run.path), "status": status, "best_val_macro_auroc": best.value, "best_epoch": best.epoch,
              "not_cxr_flagged": data.not_cxr}
    if status == "ok":
        result.update(_evaluate_test(run, model, data))
    run.write_efficiency(_efficiency(config, run, data, timer, auroc, device, precision, status))
    return result


def build_parser():
    """The command-line parser of `python -m tfcxr.train`."""
    parser = argparse.ArgumentParser(
        prog="python -m tfcxr.train",
        description="Train a lung-masked chest X-ray classifier (defaults: CPU demo on synthetic data).",
    )
    parser.add_argument("--config", type=pathlib.Path, help="YAML config (flags override it), e.g. configs/default.yaml")
    parser.add_argument("--data", help="'demo', an NIH-layout folder, a metadata CSV, or tfds:<name>[/<config>] "
                                       "(tfds:nih_cxr14/masked_512: prepared images with their masks)")
    parser.add_argument("--masks", help="lung mask folder MASKDIR/<stem>.png (demo default: synthetic ground truth)")
    parser.add_argument("--mask", choices=MASK_MODES,
                        help="masking mode (default loose); inverse = the lungs removed (shortcut probe)")
    parser.add_argument("--margin", help="loose/box/inverse margin: fraction of width (0.05) or pixels at "
                                         "--image-size (11px)")
    parser.add_argument("--fill", choices=FILL_MODES, help="background fill (default zero)")
    parser.add_argument("--backbone", choices=BACKBONES, help="classifier backbone (default tiny)")
    parser.add_argument("--weights", help="none | imagenet | PATH")
    parser.add_argument("--image-size", type=int, help="classifier input size S")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--loss", choices=LOSSES)
    parser.add_argument("--bn-momentum", type=float,
                        help="backbone BatchNorm momentum (default: the backbone's own; 0.9 for short fine-tunes)")
    parser.add_argument("--freeze-backbone-epochs", type=int, metavar="N",
                        help="LP-FT: train the head alone for the first N epochs, then every layer (default 0)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--exclude-not-cxr", action=argparse.BooleanOptionalAction, default=None,
                        help="leave out of train/validation the images the mask QC flagged not_cxr")
    parser.add_argument("--cache", help="'memory', a file prefix, or 'none'")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--precision", choices=PRECISIONS)
    parser.add_argument("--no-finding-score", choices=NO_FINDING_METHODS,
                        help="No Finding score used by the report and the export (default max)")
    parser.add_argument("--out", help="run directory (default runs/<timestamp>-<backbone>-<mask>)")
    return cli.add_log_level(parser)


def _overrides(args):
    """CLI flags that were given -> TrainConfig keys (MaskSpec canonicalises `--margin 0.05` / `11px`)."""
    return {
        key: value
        for key, value in vars(args).items()
        if key not in ("config", "log_level") and value is not None
    }


def main(argv=None) -> int:
    """Run `python -m tfcxr.train` with `argv` (default: sys.argv); returns the exit status."""
    args = build_parser().parse_args(argv)
    return cli.run(_main, args, logger)


def _main(args) -> int:
    config = resolve_config(args.config, _overrides(args))
    start = time.perf_counter()
    try:
        result = train(config)
    finally:
        import keras

        keras.mixed_precision.set_global_policy("float32")
    minutes = (time.perf_counter() - start) / 60
    if result["status"] != "ok":
        return 1
    print(f"\nrun: {result['out']}  ({minutes:.1f} min)")
    print(f"best validation macro AUROC: {result['best_val_macro_auroc']:.4f} (epoch {result['best_epoch']})")
    print(f"test macro AUROC:            {result['test_macro_auroc']:.4f}")
    for name, value in result["test_auroc"].items():
        print(f"  {name:<10} {value:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
