"""python -m tfcxr.train end to end on a tiny synthetic set (tiny backbone, 32 px)."""

import json
import logging

import keras
import numpy as np
import pandas as pd
import pytest

from permission_helpers import not_shared
from tfcxr.config import TrainConfig, resolve_config, save_config
from tfcxr.data.synthetic import SyntheticConfig, generate
from tfcxr.labels import NO_FINDING, TARGETS
from tfcxr.train import RUN_FILES, _overrides, build_parser, main, train

PREDICTION_COLUMNS = [
    "image_id", "patient_id", "image_path", "mask_path",
    *[f"y_{t}" for t in TARGETS], f"y_{NO_FINDING}", *[f"p_{t}" for t in TARGETS],
]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn") / "set", SyntheticConfig(num_images=64, image_size=32, seed=5))


def _config(synthetic, out, **kwargs):
    values = dict(data=str(synthetic), masks=str(synthetic / "masks"), image_size=32, batch_size=16,
                  epochs=2, out=str(out), val_fraction=0.2, test_fraction=0.2, cache=None)
    values.update(kwargs)
    return TrainConfig(**values)


class _Interrupt(keras.callbacks.Callback):
    """Simulate a crash in the middle of the second epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            raise KeyboardInterrupt("simulated interruption")


def test_interrupted_run_resumes_and_writes_the_run_directory(synthetic, tmp_path, umask):
    umask(0o022)
    out = tmp_path / "run"
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(
        f"data: {synthetic}\nmasks: {synthetic / 'masks'}\nimage_size: 32\nbatch_size: 16\nepochs: 2\n"
        "val_fraction: 0.2\ntest_fraction: 0.2\ncache: null\naugment: false\n"
    )
    flags = ["--config", str(config_path), "--mask", "loose", "--margin", "2px", "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        train(resolve_config(config_path, _overrides(build_parser().parse_args(flags))), callbacks=[_Interrupt()])
    assert len(pd.read_csv(out / "history.csv")) == 1  # epoch 0 done, epoch 1 interrupted
    assert json.loads((out / "checkpoints" / "training_metadata.json").read_text())["epoch"] == 1

    assert main(flags) == 0  # the same command resumes at epoch 1
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [0, 1]
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    predictions = pd.read_csv(out / "test_predictions.csv")
    assert list(predictions.columns) == PREDICTION_COLUMNS
    assert predictions[[f"p_{t}" for t in TARGETS]].stack().between(0, 1).all()
    efficiency = json.loads((out / "efficiency.json").read_text())
    for key in ("seconds_per_epoch", "train_images_per_second", "epochs_run", "best_epoch", "device", "precision"):
        assert key in efficiency
    assert efficiency["epochs_run"] == 2 and efficiency["precision"] == "float32"
    history = pd.read_csv(out / "history.csv")
    assert {"epoch", "loss", "val_loss", "val_macro_auroc", "val_auroc_Mass"} <= set(history.columns)
    assert keras.models.load_model(out / "best.keras").output_shape == (None, 5)
    assert "margin: 2px" in (out / "config.yaml").read_text()
    # Keras saves, BackupAndRestore checkpoints, CSVLogger, TensorBoard logs, YAML/JSON/CSV: all shareable.
    assert not_shared(out) == []


class _BackboneWeights(keras.callbacks.Callback):
    """Record the backbone's and the head's weights before training and after every epoch."""

    def __init__(self):
        super().__init__()
        self.backbone, self.head = [], []

    def _record(self):
        from tfcxr.models import backbone_layer

        self.backbone.append([w.copy() for w in backbone_layer(self.model).get_weights()])
        self.head.append([w.copy() for w in self.model.get_layer("logits").get_weights()])

    def on_train_begin(self, logs=None):  # once per LP-FT phase: record only the start
        if not self.backbone:
            self._record()

    def on_epoch_end(self, epoch, logs=None):
        self._record()


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_freeze_backbone_epochs_trains_the_head_first_then_every_layer(synthetic, tmp_path):
    weights = _BackboneWeights()
    result = train(_config(synthetic, tmp_path / "run", mask="original", epochs=3, freeze_backbone_epochs=2,
                           augment=False), callbacks=[weights])
    assert result["status"] == "ok"
    start, after_1, after_2, after_3 = weights.backbone
    assert _same(start, after_1) and _same(after_1, after_2)  # frozen, BatchNorm statistics included
    assert not _same(after_2, after_3)  # the last epoch trains the backbone
    assert not _same(weights.head[0], weights.head[1])  # the head trains while the backbone is frozen
    assert list(pd.read_csv(tmp_path / "run" / "history.csv")["epoch"]) == [0, 1, 2]  # both phases logged
    again = train(_config(synthetic, tmp_path / "run", mask="original", epochs=3, freeze_backbone_epochs=2,
                          augment=False))  # a finished run, rerun: nothing is trained twice
    assert again["status"] == "ok" and again["test_macro_auroc"] == pytest.approx(result["test_macro_auroc"])
    assert list(pd.read_csv(tmp_path / "run" / "history.csv")["epoch"]) == [0, 1, 2]


class _RecordAndInterrupt(_BackboneWeights):
    """`_BackboneWeights`, then the interruption of `_Interrupt` (in the second epoch)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            raise KeyboardInterrupt("simulated interruption")


@pytest.mark.parametrize("frozen", [1, 2])  # interrupted in epoch 2 of 3: after the frozen phase, or inside it
def test_freeze_backbone_epochs_resumes_in_its_phase(synthetic, tmp_path, frozen):
    out = tmp_path / "run"
    config = dict(mask="original", epochs=3, freeze_backbone_epochs=frozen, augment=False)
    first = _RecordAndInterrupt()
    with pytest.raises(KeyboardInterrupt):
        train(_config(synthetic, out, **config), callbacks=[first])
    weights = _BackboneWeights()
    assert train(_config(synthetic, out, **config), callbacks=[weights])["status"] == "ok"
    start, after_2, after_3 = weights.backbone  # resumed after epoch 1, then epochs 2 and 3
    assert _same(weights.head[0], first.head[1])  # restored from the backup, not a fresh start
    assert _same(start, first.backbone[1])
    assert _same(start, after_2) == (frozen == 2)  # epoch 2 is still frozen only when N = 2
    assert not _same(after_2, after_3)  # epoch 3 trains the backbone
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [0, 1, 2]


def test_freeze_backbone_epochs_must_leave_an_epoch_to_fine_tune(synthetic, tmp_path):
    with pytest.raises(ValueError, match="freeze_backbone_epochs"):
        _config(synthetic, tmp_path / "run", epochs=2, freeze_backbone_epochs=2)


def test_a_finished_run_trains_on_to_more_epochs(synthetic, tmp_path):
    """What `tfcxr.experiment` relies on when a cell asks for more epochs than its complete run has."""
    from tfcxr.rundir import RunDir

    out = tmp_path / "run"
    assert train(_config(synthetic, out, mask="original", epochs=1, augment=False))["status"] == "ok"
    weights = _BackboneWeights()
    assert train(_config(synthetic, out, mask="original", epochs=2, augment=False), callbacks=[weights])["status"] == "ok"
    assert len(weights.backbone) == 2  # the backup's weights, then epoch 2 only: epoch 1 is not trained again
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [0, 1]
    run = RunDir(out)
    assert run.is_complete() and run.config.epochs == 2 and run.efficiency()["epochs_run"] == 2
    with pytest.raises(ValueError, match="2 epochs are trained there, more than epochs=1"):
        train(_config(synthetic, out, mask="original", epochs=1, augment=False))
    assert run.is_complete()  # left as it was


def test_resume_refuses_a_different_config(synthetic, tmp_path):
    (tmp_path / "run").mkdir()
    save_config(_config(synthetic, tmp_path / "run", mask="tight"), tmp_path / "run" / "config.yaml")
    with pytest.raises(ValueError, match="mask: 'tight' -> 'loose'"):
        train(_config(synthetic, tmp_path / "run"))


class _PoisonWeights(keras.callbacks.Callback):
    """Make the loss NaN from the second epoch on."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            layer = self.model.get_layer("logits")
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel * np.nan, bias])


def test_nan_loss_stops_and_keeps_last_good_state(synthetic, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.ERROR, logger="tfcxr.train"):
        result = train(_config(synthetic, out, epochs=2), callbacks=[_PoisonWeights()])
    assert result["status"] == "nan_loss"
    assert "loss became nan at epoch 2" in caplog.text and "Kept best.keras" in caplog.text
    model = keras.models.load_model(out / "best.keras")
    assert np.all(np.isfinite(model.get_layer("logits").get_weights()[0]))
    assert json.loads((out / "checkpoints" / "training_metadata.json").read_text())["epoch"] == 1
    assert json.loads((out / "efficiency.json").read_text())["status"] == "nan_loss"
    assert not (out / "test_predictions.csv").exists()


def test_unknown_config_key_and_empty_split(synthetic, tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mask: loose\nepoch: 3\n")
    with caplog.at_level(logging.ERROR, logger="tfcxr.train"):
        assert main(["--config", str(bad)]) == 2
    assert "bad.yaml" in caplog.text and "epoch" in caplog.text
    caplog.clear()
    one_patient = tmp_path / "one" / "Data_Entry_2017.csv"
    one_patient.parent.mkdir()
    frame = pd.read_csv(synthetic / "Data_Entry_2017.csv")
    frame["Patient ID"] = 1
    frame.to_csv(one_patient, index=False)
    (tmp_path / "one" / "images").symlink_to(synthetic / "images")
    with caplog.at_level(logging.ERROR, logger="tfcxr.train"):
        assert main(["--data", str(one_patient.parent), "--mask", "original", "--out", str(tmp_path / "r")]) == 2
    assert "empty" in caplog.text


def test_cli_mask_flags_build_one_mask_spec(tmp_path):
    """`--mask inverse --margin 0.05 --fill zero` (and `11px`) become the run's MaskSpec; an old flat run-dir
    config.yaml still resumes with the same spec."""
    from tfcxr.mask_spec import MaskSpec

    args = build_parser().parse_args(["--mask", "inverse", "--margin", "0.05", "--fill", "zero", "--image-size", "64"])
    assert resolve_config(None, _overrides(args)).mask_spec == MaskSpec("inverse", 0.05, "zero", 64)
    args = build_parser().parse_args(["--mask", "loose", "--margin", "11px"])
    assert resolve_config(None, _overrides(args)).mask_spec == MaskSpec("loose", "11px", "zero", 128)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--mask", "lungs"])
    old = tmp_path / "config.yaml"  # a run dir written before MaskSpec: flat keys, old order
    old.write_text("data: demo\nmasks: null\nmask: loose\nmargin: 0.05\nfill: zero\nbackbone: tiny\nimage_size: 128\n")
    assert resolve_config(old).mask_spec == TrainConfig().mask_spec
