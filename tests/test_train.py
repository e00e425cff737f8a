"""python -m tfcxr.train end to end on a tiny synthetic set (tiny backbone, 32 px)."""

import json
import logging

import keras
import numpy as np
import pandas as pd
import pytest

from tfcxr.config import TrainConfig
from tfcxr.data.synthetic import SyntheticConfig, generate
from tfcxr.labels import NO_FINDING, TARGETS
from tfcxr.train import RUN_FILES, main, train

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


def test_cli_writes_the_run_directory(synthetic, tmp_path):
    out = tmp_path / "run"
    argv = ["--data", str(synthetic), "--masks", str(synthetic / "masks"), "--mask", "loose", "--margin", "2px",
            "--image-size", "32", "--batch-size", "16", "--epochs", "2", "--out", str(out), "--no-augment"]
    assert main(argv) == 0
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
    model = keras.models.load_model(out / "best.keras")
    assert model.output_shape == (None, 5)
    assert "margin: 2px" in (out / "config.yaml").read_text()


class _Interrupt(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            raise KeyboardInterrupt("simulated interruption")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


def test_resume_after_interruption(synthetic, tmp_path):
    config = _config(synthetic, tmp_path / "run", epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[_Interrupt()])
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 1  # epoch 0 done, epoch 1 interrupted
    started = []

    class _Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            started.append(epoch)

    result = train(_config(synthetic, tmp_path / "run", epochs=2), callbacks=[_Record()])
    assert result["status"] == "ok"
    assert started == [1]  # resumed from the checkpoint of epoch 0
    assert list(pd.read_csv(tmp_path / "run" / "history.csv")["epoch"]) == [0, 1]


def test_resume_refuses_a_different_config(synthetic, tmp_path):
    (tmp_path / "run").mkdir()
    _config(synthetic, tmp_path / "run")  # valid
    from tfcxr.config import save_config

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
