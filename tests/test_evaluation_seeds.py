"""Seed variance, cell comparisons over seeds and the shortcut probe (inverse vs original vs tight), on fake runs."""

import json
import math

import pytest

from evaluation_fakes import make_run, write_images
from tfcxr.evaluation import report
from tfcxr.evaluation.runs import group_cells, load_runs, short_value


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("img"), num_images=24)


def _grid(root, images, modes, seeds, noise=None):
    image_paths, mask_paths = images
    noise = noise or {}
    return [make_run(root / f"tiny-{mode}-seed{seed}", image_paths, mask_paths, mask=mode, seed=seed,
                     noise=noise.get(mode, 0.6), model=False)
            for mode in modes for seed in seeds]


def test_seeds_group_into_cells_with_spread_and_tests_over_seeds(tmp_path, images):
    dirs = _grid(tmp_path, images, ("original", "tight"), (0, 1, 2), noise={"tight": 2.0})
    runs = load_runs(dirs)
    assert [r.label for r in runs[:3]] == ["tiny / original, seed 0", "tiny / original, seed 1", "tiny / original, seed 2"]
    cells = group_cells(runs)
    assert [c.label for c in cells] == ["tiny / original", "tiny / tight"] and cells[1].seeds == [0, 1, 2]

    out = tmp_path / "report"
    result = report.write_report(runs, out, num_resamples=100, gradcam_images=0)
    saved = json.loads((out / "metrics.json").read_text())
    cell = saved["cells"][0]
    values = [e["macro_auroc"] for e in cell["per_seed"]]
    assert cell["macro_auroc"]["mean"] == pytest.approx(sum(values) / 3)
    assert cell["macro_auroc"]["min"] == min(values) and cell["macro_auroc"]["max"] == max(values)
    assert cell["macro_auroc"]["sd"] > 0 and cell["no_finding_auroc"]["n"] == 3
    lo, hi = cell["per_seed"][0]["macro_auroc_ci"]
    assert lo <= values[0] <= hi
    # Run-level comparisons pair the same seed only (3), not every pair of the 6 runs (15).
    assert len(saved["comparisons"]) == 3
    assert all(c["label_a"][-1] == c["label_b"][-1] for c in saved["comparisons"])
    (comparison,) = saved["cell_comparisons"]
    assert comparison["differs_in"] == ["mask"] and comparison["seeds"] == [0, 1, 2]
    diffs = [e["macro_auroc_diff"] for e in comparison["per_seed"]]
    assert comparison["macro_auroc_diff"]["mean"] == pytest.approx(sum(diffs) / 3)
    assert min(diffs) > 0  # tight is noisier in every seed
    assert 0 < comparison["macro_auroc_diff"]["t_test_p"] <= 1 and comparison["macro_auroc_diff"]["wilcoxon_p"] == 0.25
    low, high = comparison["macro_auroc_diff_patients_seeds_ci"]
    assert low <= comparison["macro_auroc_diff"]["mean"] <= high
    assert 0 <= comparison["per_seed"][0]["delong_p"]["No Finding"] <= 1
    md = (out / "report.md").read_text()
    assert "## Seed variance per cell" in md and "## Cell comparisons over seeds" in md
    assert "| tiny / original | 3 |" in md and " ± " in md
    assert result["shortcut_probe"][0]["modes"] == ["original", "tight"]


def test_shortcut_probe_inverse_vs_original_vs_tight(tmp_path, images):
    """Any mask name in the runs is reported; `inverse` gets the probe section and its sentence."""
    dirs = _grid(tmp_path, images, ("inverse", "original", "tight", "loose"), (0,), noise={"inverse": 1.2})
    out = tmp_path / "report"
    report.write_report(load_runs(dirs), out, num_resamples=100, gradcam_images=0)
    saved = json.loads((out / "metrics.json").read_text())
    assert [r["mask"] for r in saved["runs"]] == ["inverse", "original", "tight", "loose"]
    (probe,) = saved["shortcut_probe"]
    assert probe["context"] == "tiny" and probe["modes"] == ["inverse", "original", "tight"]
    assert {(t["mode_a"], t["mode_b"]) for t in probe["tests"]} == {
        ("inverse", "original"), ("inverse", "tight"), ("original", "tight")}
    inverse = probe["auroc"]["inverse"]
    run = next(r for r in saved["runs"] if r["mask"] == "inverse")
    assert inverse["macro"]["mean"] == pytest.approx(run["macro"]["auroc"])
    assert inverse["classes"]["Mass"]["mean"] == pytest.approx(run["classes"]["Mass"]["auroc"])
    test = next(t for t in probe["tests"] if (t["mode_a"], t["mode_b"]) == ("inverse", "original"))
    assert 0 <= test["per_seed"][0]["delong_p"]["Mass"] <= 1
    share = probe["inverse_share_of_original_margin"]
    orig = probe["auroc"]["original"]["macro"]["mean"]
    assert share == pytest.approx((inverse["macro"]["mean"] - 0.5) / (orig - 0.5))
    md = (out / "report.md").read_text()
    assert "## Shortcut probe: inverse vs original vs tight" in md and "### tiny" in md
    assert "signal outside the lungs (devices, markers, body habitus)" in md and "Mask of truth" in md
    assert "| inverse | 1 |" in md and "## Seed variance" not in md  # single-seed grid: no seed tables
    assert len(saved["comparisons"]) == 6  # single seed: every pair of runs, as before


def test_weights_axis_labels_cells_by_pretraining_folder(tmp_path, images):
    import yaml

    dirs = _grid(tmp_path / "a", images, ("original",), (0, 1)) + _grid(tmp_path / "b", images, ("original",), (0, 1))
    for d in dirs[2:]:
        config = yaml.safe_load((d / "config.yaml").read_text())
        config["weights"] = "runs/pretrain_tiny/backbone.weights.h5"
        (d / "config.yaml").write_text(yaml.safe_dump(config))
    for d in dirs[:2]:
        config = yaml.safe_load((d / "config.yaml").read_text())
        config["weights"] = "none"
        (d / "config.yaml").write_text(yaml.safe_dump(config))
    result = report.evaluate_runs(load_runs(dirs), num_resamples=50)
    assert [c["label"] for c in result["cells"]] == ["tiny / original, weights=none",
                                                     "tiny / original, weights=pretrain_tiny"]
    (comparison,) = result["cell_comparisons"]
    assert comparison["differs_in"] == ["weights"] and not math.isnan(comparison["no_finding_auroc_diff"]["mean"])
    assert short_value("weights", "x/w.weights.h5") == "w.weights.h5" and short_value("mask", "tight") == "tight"
