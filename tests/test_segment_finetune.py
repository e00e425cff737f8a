"""Tests for tfcxr.segment.finetune (tiny model, tiny synthetic pairs): jitter, config, resume, bad checkpoints."""

import csv
import dataclasses
import json
import pathlib

import numpy as np
import pytest

from segment_fakes import write_pairs
from tfcxr.data.pairs import load_pairs
from tfcxr.segment import finetune


def test_jitter_moves_every_side_outwards():
    import tensorflow as tf

    boxes = tf.constant([[[10.0, 10.0, 20.0, 20.0]] * 2])
    out = finetune.jitter_boxes_tf(boxes, 5.0, 64, tf.constant([1, 2])).numpy()
    delta = (out - boxes.numpy()) * np.array([-1, -1, 1, 1])
    assert np.all(delta >= 0) and np.all(delta <= 5.0)


def test_config_yaml_and_flags(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 3\nlr: 5.0e-5\n")
    args = finetune.build_parser().parse_args(["--config", str(config), "--epochs", "4", "--no-freeze-image-encoder"])
    resolved = finetune.resolve_config(args)
    assert (resolved.epochs, resolved.lr, resolved.freeze_image_encoder) == (4, 5e-5, False)
    config.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="epochz"):
        finetune.resolve_config(finetune.build_parser().parse_args(["--config", str(config)]))
    config.write_text("epochs: [3\n")
    with pytest.raises(ValueError, match="c.yaml: invalid YAML"):
        finetune.resolve_config(finetune.build_parser().parse_args(["--config", str(config)]))
    with pytest.raises(ValueError, match="val_fraction"):
        finetune.FinetuneConfig(val_fraction=1.5)
    with pytest.raises(ValueError, match="prior_prompt_fraction"):
        finetune.FinetuneConfig(prior_prompt_fraction=2.0)
    shipped = pathlib.Path(__file__).resolve().parents[1] / "configs" / "segment_finetune.yaml"
    recipe = finetune.resolve_config(finetune.build_parser().parse_args(["--config", str(shipped)]))
    assert (recipe.model, recipe.freeze_image_encoder, recipe.prior_prompt_fraction) == ("litemedsam", True, 0.5)
    whole = finetune.resolve_config(finetune.build_parser().parse_args(
        ["--config", str(shipped.with_name("segment_finetune_whole.yaml")), "--model", "runs/other"]))
    assert (whole.model, whole.freeze_image_encoder, whole.epochs, whole.lr) == ("runs/other", False, 12, 2e-5)


def test_finetune_resumes_saves_and_rejects_wrong_checkpoint(tmp_path):
    from tfcxr.segment import load_segmenter
    from tfcxr.segment.litemedsam import ARCHITECTURES
    from tfcxr.segment.model import build_litemedsam_model
    from tfcxr.segment.prompts import fit_priors
    from tfcxr.segment.segmenter_format import save_segmenter

    data = write_pairs(tmp_path / "pairs")
    out = tmp_path / "run"
    args = ["--data", str(data), "--model", "tiny", "--out", str(out), "--batch-size", "4", "--val-fraction", "0.2",
            "--prior-prompt-fraction", "0.5"]
    assert finetune.main(args + ["--epochs", "1"]) == 0  # the "interrupted" run: one epoch done
    assert finetune.main(args + ["--epochs", "2"]) == 0  # resumes at epoch 2
    with open(out / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert all(0.0 <= float(row["val_dice_prior"]) <= 1.0 for row in rows)
    assert (out / "checkpoints" / "ckpt-2.index").is_file()
    loaded = load_segmenter(str(out))
    assert loaded.image_size == 64 and not (out / "lung_priors.json").exists()  # priors live in segmenter.json
    train = [p for p in load_pairs(str(data)) if p.name in json.loads((out / "split.json").read_text())[
        "train"]]
    np.testing.assert_allclose(loaded.priors, fit_priors(p.mask for p in train), atol=1e-5)
    assert loaded.mask_definition["name"] == "trained"

    other = dataclasses.replace(ARCHITECTURES["litemedsam-tiny"], decoder_mlp_dim=48)
    save_segmenter(build_litemedsam_model(other, name="other"), tmp_path / "other")
    with pytest.raises(ValueError, match="checkpoint does not match"):
        finetune.finetune(finetune.FinetuneConfig(data=str(data), model=str(tmp_path / "other"), out=str(out),
                                                  epochs=3))
    # From the command line the same mistake is one line and exit code 2.
    assert finetune.main(["--data", str(data), "--model", str(tmp_path / "other"), "--out", str(out),
                          "--epochs", "3"]) == 2
