"""Tests for tfcxr.segment.average: checkpoint averaging of a tiny fine-tuning run."""

import dataclasses
import json

import numpy as np
import pytest

from segment_fakes import write_pairs
from tfcxr.segment import average, finetune


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny fine-tuning run of 3 epochs that keeps all 3 checkpoints."""
    root = tmp_path_factory.mktemp("average")
    data = write_pairs(root / "pairs")
    out = root / "run"
    assert finetune.main(["--data", str(data), "--model", "tiny", "--out", str(out), "--batch-size", "2",
                          "--val-fraction", "0.2", "--epochs", "3", "--keep-checkpoints", "3", "--lr", "1e-3"]) == 0
    return out


def checkpoint_weights(run_dir, epoch) -> dict:
    """``{key: array}`` of one epoch checkpoint, read into a fresh copy of the run's model."""
    from tfcxr.segment import load_segmenter
    from tfcxr.segment.weights import export_weights

    model = load_segmenter(str(run_dir))
    average.average_checkpoints(model, [average.checkpoint_path(run_dir, epoch)])
    return export_weights(model.weight_map())


def test_average_is_the_mean_of_the_chosen_checkpoints(run_dir, tmp_path):
    from tfcxr.segment import load_segmenter
    from tfcxr.segment.weights import export_weights

    assert average.kept_epochs(run_dir) == [1, 2, 3]
    assert average.main([str(run_dir), "--last", "2", "--out", str(tmp_path / "avg")]) == 0
    averaged = export_weights(load_segmenter(str(tmp_path / "avg")).weight_map())
    second, third = checkpoint_weights(run_dir, 2), checkpoint_weights(run_dir, 3)
    assert any(not np.array_equal(second[key], third[key]) for key in third)  # training moved the weights
    for key in averaged:
        np.testing.assert_allclose(averaged[key], (second[key] + third[key]) / 2, rtol=1e-6, atol=1e-7)
    assert json.loads((tmp_path / "avg" / "averaged.json").read_text())["epochs"] == [2, 3]
    np.testing.assert_array_equal(load_segmenter(str(tmp_path / "avg")).priors, load_segmenter(str(run_dir)).priors)


def test_average_rejects_bad_choices_and_mismatched_checkpoints(run_dir, tmp_path):
    from tfcxr.segment.litemedsam import ARCHITECTURES
    from tfcxr.segment.model import build_litemedsam_model

    with pytest.raises(ValueError, match=r"no checkpoint for epochs \[7\]; kept epochs: \[1, 2, 3\]"):
        average.checkpoint_paths(run_dir, epochs=[2, 7])
    with pytest.raises(ValueError, match="at least 2"):
        average.checkpoint_paths(run_dir, last=1)
    with pytest.raises(ValueError, match="either"):
        average.checkpoint_paths(run_dir, epochs=[1, 2], last=2)
    with pytest.raises(ValueError, match="new folder"):
        average.average_run(run_dir, run_dir, last=2)
    other = build_litemedsam_model(dataclasses.replace(ARCHITECTURES["litemedsam-tiny"], decoder_mlp_dim=48), name="o")
    with pytest.raises(ValueError, match="ckpt-1: checkpoint does not match"):
        average.average_checkpoints(other, average.checkpoint_paths(run_dir, epochs=[1, 2]))
    with pytest.raises(SystemExit):
        average.build_parser().parse_args([str(run_dir), "--out", str(tmp_path)])  # --last or --epochs needed
