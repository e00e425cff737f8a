"""Tests for tfcxr.segment.finetune (tiny model, tiny synthetic pairs): loss, data loading, resume, bad checkpoints."""

import csv
import dataclasses
import json
import logging
import pathlib

import cv2
import numpy as np
import pytest

from segment_fakes import write_pairs
from tfcxr.segment import finetune


def test_loss_and_jitter():
    import tensorflow as tf

    labels = np.zeros((1, 2, 8, 8), np.float32)
    labels[..., 2:6, 2:6] = 1
    good = finetune.segmentation_loss(tf.constant(labels * 20 - 10), labels)
    bad = finetune.segmentation_loss(tf.constant(10 - labels * 20), labels)
    assert float(good) < 0.05 < 1.0 < float(bad)
    boxes = tf.constant([[[10.0, 10.0, 20.0, 20.0]] * 2])
    out = finetune.jitter_boxes_tf(boxes, 5.0, 64, tf.constant([1, 2])).numpy()
    delta = (out - boxes.numpy()) * np.array([-1, -1, 1, 1])
    assert np.all(delta >= 0) and np.all(delta <= 5.0)


def test_load_pairs_skips_bad_pairs_and_checks_manifest(tmp_path, caplog):
    root = write_pairs(tmp_path / "pairs", count=3)
    cv2.imwrite(str(root / "masks" / "p1.png"), np.zeros((10, 10), np.uint8))  # wrong size
    with caplog.at_level(logging.WARNING):
        pairs = finetune.load_pairs(str(root))
    assert [p.name for p in pairs] == ["p0", "p2"]
    assert "p1.png" in caplog.text and "does not match" in caplog.text
    manifest = tmp_path / "pairs.csv"
    with open(manifest, "w", newline="") as handle:
        csv.writer(handle).writerows([["image", "mask"], ["a.png", "b.png"]])
    with pytest.raises(ValueError, match="image_path"):
        finetune.load_pairs(str(manifest))
    train, val = finetune.split_pairs(list(range(10)), 0.2, seed=0)
    assert len(val) == 2 and sorted(train + val) == list(range(10))


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
    train = [p for p in finetune.load_pairs(str(data)) if p.name in json.loads((out / "split.json").read_text())[
        "train"]]
    np.testing.assert_allclose(loaded.priors, fit_priors(p.mask for p in train), atol=1e-5)
    assert loaded.mask_definition["name"] == "trained"

    other = dataclasses.replace(ARCHITECTURES["litemedsam-tiny"], decoder_mlp_dim=48)
    build_litemedsam_model(other, name="other").save(tmp_path / "other")
    with pytest.raises(ValueError, match="checkpoint does not match"):
        finetune.main(["--data", str(data), "--model", str(tmp_path / "other"), "--out", str(out), "--epochs", "3"])


def test_prepare_examples_boxes_labels_and_priors(tmp_path):
    from tfcxr.segment import load_segmenter
    from tfcxr.segment.prompts import input_boxes

    model = load_segmenter("tiny")
    pairs = finetune.load_pairs(str(write_pairs(tmp_path / "pairs", count=2)))
    priors = np.asarray([[0.1, 0.2, 0.45, 0.8], [0.55, 0.2, 0.9, 0.8]], np.float32)
    examples = finetune.prepare_examples(model, pairs, 32, priors)
    sizes = model.preprocess(pairs[0].image[None])[1]
    np.testing.assert_allclose(examples["prior_boxes"][0], np.asarray(input_boxes(model, priors[None], sizes))[0])
    assert examples["boxes"].shape == examples["prior_boxes"].shape == (2, 2, 4)
    left, right = examples["boxes"][0]
    assert left[2] < right[0]  # one box per lung, image-left first, matching the prior order
    labels = examples["labels"]
    assert labels.shape == (2, 2, 32, 32) and labels[0, 0].any() and labels[0, 1].any()
    assert not (labels[0, 0] & labels[0, 1]).any()  # each box's label is its own lung
    np.testing.assert_array_equal(examples["union"], labels.max(axis=1))
