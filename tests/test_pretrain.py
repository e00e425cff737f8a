"""`python -m tfcxr.pretrain`: exclusions, resume, errors, and pretrain -> train --weights end to end."""

import json
import pathlib

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from tfcxr import pretrain

SIZE = 32


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from tfcxr.data.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("demo")
    return pathlib.Path(generate(root / "synthetic", SyntheticConfig(num_images=60, image_size=48, seed=0)))


def _args(images, out, *extra):
    return ["--images", *map(str, images), "--out", str(out), "--backbone", "tiny", "--image-size", str(SIZE),
            "--epochs", "1", "--batch-size", "8", "--projection-dim", "32", "--predictor-dim", "8",
            "--precision", "float32", "--log-level", "WARNING", *extra]


def test_pretrain_then_train_loads_the_backbone(tmp_path, demo, monkeypatch):
    """Pretrain tiny for one epoch (test patients excluded), resume to 2, then train with --weights PATH."""
    import keras

    from tfcxr.config import TrainConfig, resolve_config
    from tfcxr.data.pipeline import PipelineConfig
    from tfcxr.data.records import load_records
    from tfcxr.models import build_backbone
    from tfcxr.train import train

    monkeypatch.chdir(tmp_path)
    extra = tmp_path / "extra" / "nested"
    extra.mkdir(parents=True)
    cv2.imwrite(str(extra / "photo.jpg"), np.full((40, 36), 120, np.uint8))  # JPEG, no patient id, recursive find
    train_yaml = tmp_path / "train.yaml"
    train_yaml.write_text(yaml.safe_dump({"data": str(demo), "mask": "original", "image_size": SIZE}))
    (tmp_path / "exclude.txt").write_text("# stems or patients\n00000001_000.png\n", encoding="utf-8")
    out = tmp_path / "pre"
    argv = _args([demo / "images", tmp_path / "extra"], out, "--exclude-split-of", str(train_yaml),
                 "--exclude-list", str(tmp_path / "exclude.txt"))
    assert pretrain.main(argv) == 0

    config = resolve_config(train_yaml)
    records = load_records(PipelineConfig(data=str(demo), mask="original", image_size=SIZE, curation=config.curation()))
    test_patients = set(records.loc[records["split"] == "test", "patient_id"].astype(str))
    used = pd.read_csv(out / "images.csv", dtype=str, keep_default_na=False)
    assert test_patients and not test_patients & set(used["patient_id"])
    assert "00000001_000.png" not in set(used["image_id"]) and "photo.jpg" in set(used["image_id"])
    meta = json.loads((out / "backbone.json").read_text())
    assert meta["backbone"] == "tiny" and meta["method"] == "simsiam" and meta["images"] == len(used)
    assert meta["excluded"]["split"] > 0 and meta["epochs_run"] == 1 and meta["cpu_seconds"] > 0
    assert yaml.safe_load((out / "config.yaml").read_text())["exclude_split_of"] == str(train_yaml)

    argv[argv.index("--epochs") + 1] = "2"  # rerun = resume from checkpoints/ up to the new count
    assert pretrain.main(argv) == 0
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [0, 1] and np.isfinite(history["loss"]).all()
    weights = out / pretrain.WEIGHTS_NAME

    reference = build_backbone("tiny", SIZE)
    random_init = [w.copy() for w in reference.get_weights()]
    reference.load_weights(str(weights))
    expected = reference.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(expected, random_init))

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.weights = [w.copy() for w in self.model.get_layer("tiny_backbone").get_weights()]

    probe = Probe()
    run = TrainConfig(data=str(demo), mask="original", backbone="tiny", weights=str(weights), image_size=SIZE,
                      epochs=1, batch_size=16, augment=False, cache=None, precision="float32", out=str(tmp_path / "run"))
    assert train(run, callbacks=[probe])["status"] == "ok"
    assert len(probe.weights) == len(expected)
    for got, want in zip(probe.weights, expected):
        np.testing.assert_array_equal(got, want)


def test_bad_inputs_exit_2_with_one_line_naming_the_file(tmp_path, demo, caplog):
    assert pretrain.main(_args([tmp_path / "missing"], tmp_path / "o")) == 2
    assert f"{tmp_path / 'missing'}: image folder not found" in caplog.text
    broken = tmp_path / "broken.yaml"
    broken.write_text("images: [unclosed\n", encoding="utf-8")
    assert pretrain.main(["--config", str(broken)]) == 2
    assert "broken.yaml: invalid YAML" in caplog.text
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("images: [x]\nepoch: 3\n", encoding="utf-8")
    assert pretrain.main(["--config", str(unknown)]) == 2
    assert "unknown.yaml: unknown config key(s) ['epoch']" in caplog.text
    assert pretrain.main(_args([demo / "images"], tmp_path / "o", "--mask", "tight")) == 2
    assert "needs a mask folder" in caplog.text
    assert pretrain.main(_args([demo / "images"], tmp_path / "o", "--exclude-list", str(tmp_path / "nope.txt"))) == 2
    assert "nope.txt: exclude list not found" in caplog.text


def test_changed_config_is_refused_and_metadata_checks_the_backbone(tmp_path, demo, caplog):
    from tfcxr.models import build_backbone
    from tfcxr.models.backbones import load_backbone_weights

    out = tmp_path / "pre"
    assert pretrain.main(_args([demo / "images"], out, "--mask", "tight", "--masks", str(demo / "masks"),
                               "--max-images", "16")) == 0
    assert pretrain.main(_args([demo / "images"], out, "--max-images", "16")) == 2
    assert "config.yaml: this directory holds a pretraining run with a different config (mask" in caplog.text
    with pytest.raises(ValueError, match="weights are for backbone='tiny'"):
        load_backbone_weights(build_backbone("tiny", SIZE), str(out / pretrain.WEIGHTS_NAME), "densenet121")
