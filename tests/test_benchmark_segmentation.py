"""Tests for benchmarks/segmentation.py: the held-out split (with its validation file) and the inference sweep."""

import csv
import importlib.util
import pathlib

import cv2
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_segmentation", ROOT / "benchmarks" / "segmentation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_pairs(folder: pathlib.Path, stems, size: int = 48):
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(len(stems))
    mask = np.zeros((size, size), np.uint8)
    mask[8:40, 5:20] = 255
    mask[8:40, 28:43] = 255
    for stem in stems:
        cv2.imwrite(str(folder / "images" / f"{stem}.png"), (rng.random((size, size)) * 255).astype(np.uint8))
        cv2.imwrite(str(folder / "masks" / f"{stem}.png"), mask)


def _stems(path):
    with open(path, newline="") as handle:
        return {pathlib.Path(row["image_path"]).stem for row in csv.DictReader(handle)}


def test_split_validation_file_is_disjoint_from_train_and_test(bench, tmp_path):
    data = tmp_path / "data"
    _write_pairs(data / "lungs_v7_covid", [f"v{i:02d}" for i in range(20)])
    _write_pairs(data / "lungs_shenzhen_montgomery", [f"CHNCXR_{i:04d}_0" for i in range(4)] + ["MCUCXR_0001_0",
                                                                                                 "MCUCXR_0002_1"])
    _write_pairs(data / "shenzhen_lungs", ["CHNCXR_0100_0"])
    plain = bench.make_split(data, tmp_path / "plain", v7_train_max=8, v7_test_max=3)
    with_val = bench.make_split(data, tmp_path / "val", v7_train_max=8, v7_test_max=3, v7_val_max=5)
    assert plain["stems"] == {k: v for k, v in with_val["stems"].items() if k != "val_v7"}  # same train/test
    val, train, test = (_stems(tmp_path / "val" / f"{n}.csv") for n in ("val_v7", "train", "test_v7"))
    assert len(val) == 5 and not val & train and not val & test and not (tmp_path / "plain" / "val_v7.csv").exists()
    with pytest.raises(ValueError, match="v7-train-max"):
        bench.make_split(data, tmp_path / "bad", v7_val_max=5)


def test_flip_priors_mirrors_and_swaps_the_lungs(bench):
    priors = np.asarray([[0.1, 0.2, 0.4, 0.8], [0.55, 0.15, 0.9, 0.85]], np.float32)
    mirrored = bench._flip_priors(priors)
    np.testing.assert_allclose(mirrored, [[0.1, 0.15, 0.45, 0.85], [0.6, 0.2, 0.9, 0.8]], atol=1e-6)
    np.testing.assert_allclose(bench._flip_priors(mirrored), priors, atol=1e-6)


def test_sweep_scores_every_setting_on_every_pair(bench, tmp_path):
    _write_pairs(tmp_path / "pairs", ["a", "b"])
    result = bench.sweep_inference("tiny", [str(tmp_path / "pairs")], thresholds=(0.0, 0.5), rounds=(0, 1),
                                   margins=(0.02,))
    assert result["n"] == 2 and sorted(result["names"]) == ["a", "b"]
    assert len(result["per_image"]) == 2 * 2 * 2  # (prior, 1 round) x 2 thresholds x (none, flip)
    assert all(len(v) == 2 and all(0.0 <= d <= 1.0 for d in v) for v in result["per_image"].values())
    means = list(result["mean_dice"].values())
    assert means == sorted(means, reverse=True)


def test_run_validation_pairs_reads_the_runs_split(bench, tmp_path):
    _write_pairs(tmp_path / "pairs", ["a", "b", "c"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"data: {tmp_path / 'pairs'}\n")
    (run / "split.json").write_text('{"train": ["a", "c"], "validation": ["b"]}')
    assert [p.name for p in bench.run_validation_pairs(run)] == ["b"]
    with pytest.raises(ValueError, match="split.json"):
        bench.run_validation_pairs(tmp_path / "pairs")
