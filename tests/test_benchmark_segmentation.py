"""Tests for benchmarks/segmentation.py: the inference sweep and its flip helper."""

import importlib.util
import pathlib

import numpy as np
import pytest

from segment_fakes import write_pairs

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_segmentation", ROOT / "benchmarks" / "segmentation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flip_priors_mirrors_and_swaps_the_lungs(bench):
    priors = np.asarray([[0.1, 0.2, 0.4, 0.8], [0.55, 0.15, 0.9, 0.85]], np.float32)
    mirrored = bench._flip_priors(priors)
    np.testing.assert_allclose(mirrored, [[0.1, 0.15, 0.45, 0.85], [0.6, 0.2, 0.9, 0.8]], atol=1e-6)
    np.testing.assert_allclose(bench._flip_priors(mirrored), priors, atol=1e-6)


def test_sweep_scores_every_setting_on_every_pair(bench, tmp_path):
    write_pairs(tmp_path / "pairs", size=(48, 48), stems=["a", "b"])
    result = bench.sweep_inference("tiny", [str(tmp_path / "pairs")], thresholds=(0.0, 0.5), rounds=(0, 1),
                                   margins=(0.02,))
    assert result["n"] == 2 and sorted(result["names"]) == ["a", "b"]
    assert len(result["per_image"]) == 2 * 2 * 2  # (prior, 1 round) x 2 thresholds x (none, flip)
    assert all(len(v) == 2 and all(0.0 <= d <= 1.0 for d in v) for v in result["per_image"].values())
    means = list(result["mean_dice"].values())
    assert means == sorted(means, reverse=True)


def test_run_validation_pairs_reads_the_runs_split(bench, tmp_path):
    write_pairs(tmp_path / "pairs", size=(48, 48), stems=["a", "b", "c"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"data: {tmp_path / 'pairs'}\n")
    (run / "split.json").write_text('{"train": ["a", "c"], "validation": ["b"]}')
    assert [p.name for p in bench.run_validation_pairs(run)] == ["b"]
    with pytest.raises(ValueError, match="split.json"):
        bench.run_validation_pairs(tmp_path / "pairs")
