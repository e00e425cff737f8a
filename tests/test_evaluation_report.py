"""The report (tfcxr.evaluation.report) on fake run directories: the report folder and its edge cases, seed variance,
cell comparisons over seeds and the shortcut probe (inverse vs original vs tight)."""

import json
import math

import numpy as np
import pytest

from evaluation_fakes import make_run, write_images
from tfcxr.evaluation import figures, report
from tfcxr.evaluation.runs import group_cells, load_runs, short_value
from tfcxr.labels import NO_FINDING, TARGETS


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("img"), num_images=24)


def _grid(root, images, modes, seeds, noise=None):
    image_paths, mask_paths = images
    noise = noise or {}
    return [make_run(root / f"tiny-{mode}-seed{seed}", image_paths, mask_paths, mask=mode, seed=seed,
                     noise=noise.get(mode, 0.6), model=False)
            for mode in modes for seed in seeds]


def _assert_tables_are_well_formed(md):
    """Every markdown table's delimiter row has one cell per header column (else it does not render)."""
    lines = md.splitlines()
    delimiters = [i for i, line in enumerate(lines) if line.startswith("|---")]
    assert delimiters
    for i in delimiters:
        assert lines[i].count("|---") == lines[i - 1].count(" | ") + 1, lines[i - 1]


def test_report_folder_end_to_end(tmp_path, images):
    image_paths, mask_paths = images
    dirs = [make_run(tmp_path / "runs" / f"tiny_{mode}", image_paths, mask_paths, mask=mode, seed=i, nested=i == 1)
            for i, mode in enumerate(["original", "tight", "loose"])]
    out = tmp_path / "report"
    result = report.write_report(load_runs(dirs), out, num_resamples=200, gradcam_images=3)
    for name in ["metrics.json", "report.md", "roc_overlay.png", "mask_mode_comparison.png",
                 "mask_overlay_grid.png", "gradcam.png", "roc_tiny_loose.png"]:
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert [r["label"] for r in saved["runs"]] == ["tiny / original", "tiny / tight", "tiny / loose"]
    run0 = saved["runs"][0]
    assert set(run0["classes"]) == set(TARGETS) | {NO_FINDING}
    lo, hi = run0["macro"]["auroc_ci"]
    assert lo <= run0["macro"]["auroc"] <= hi
    assert run0["efficiency"]["epochs_to_best"] == 2 and run0["efficiency"]["best_val_auroc"] == 0.7
    assert len(saved["comparisons"]) == 3
    assert 0 <= saved["comparisons"][0]["delong"]["Mass"]["p_value"] <= 1
    assert not saved["notes"], saved["notes"]
    md = (out / "report.md").read_text()
    assert "| tiny / loose |" in md and "Mask-mode comparison" in md and "Sensitivity at 90% specificity" in md
    assert result["runs"][1]["mask"] == "tight"


def test_class_without_positives_is_reported_not_crashing(tmp_path, images):
    image_paths, mask_paths = images
    labels = np.zeros((len(image_paths), len(TARGETS)), int)
    labels[::3, 0] = 1  # Mass only; Nodule..Fibrosis have no positives
    labels[1::4, 2] = 1
    run = make_run(tmp_path / "r", image_paths, mask_paths, labels=labels, model=False)
    out = tmp_path / "rep"
    report.write_report(load_runs([run]), out, num_resamples=50, gradcam_images=2)
    saved = json.loads((out / "metrics.json").read_text())["runs"][0]
    assert saved["classes"]["Nodule"]["auroc"] is None
    assert saved["classes"]["Nodule"]["undefined"].startswith("no positives in the test set")
    assert saved["macro"]["classes_included"] == ["Mass", "Pneumonia"]
    assert math.isclose(saved["macro"]["auroc"],
                        (saved["classes"]["Mass"]["auroc"] + saved["classes"]["Pneumonia"]["auroc"]) / 2)
    md = (out / "report.md").read_text()
    assert "Nodule AUROC undefined: no positives in the test set" in md
    assert "Grad-CAM skipped" in md and "best.keras: missing" in md


def test_different_test_sets_error_names_both_runs(tmp_path, images):
    image_paths, mask_paths = images
    a = make_run(tmp_path / "a", image_paths, mask_paths, model=False)
    b = make_run(tmp_path / "b", image_paths[:-2], mask_paths[:-2], model=False)
    with pytest.raises(ValueError, match="different test images: 2 only in the first"):
        report.evaluate_runs(load_runs([a, b]), num_resamples=20)
    result = report.evaluate_runs(load_runs([a, b]), num_resamples=20, require_same_test_set=False)
    assert "skipped" in result["comparisons"][0]


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
    best_val = [r["efficiency"]["best_val_auroc"] for r in saved["runs"][:3]]  # the first cell's runs
    assert None not in best_val and cell["best_val_auroc"]["mean"] == pytest.approx(sum(best_val) / 3)
    # Run-level comparisons pair the same seed only (3), not every pair of the 6 runs (15).
    assert len(saved["comparisons"]) == 3
    assert all(c["label_a"][-1] == c["label_b"][-1] for c in saved["comparisons"])
    (comparison,) = saved["cell_comparisons"]
    assert comparison["differs_in"] == ["mask"] and comparison["seeds"] == [0, 1, 2]
    diffs = [e["macro_auroc_diff"] for e in comparison["per_seed"]]
    assert comparison["macro_auroc_diff"]["mean"] == pytest.approx(sum(diffs) / 3)
    assert min(diffs) > 0  # tight is noisier in every seed
    assert 0 < comparison["macro_auroc_diff"]["t_test_p"] <= 1 and comparison["macro_auroc_diff"]["wilcoxon_p"] == 0.25
    both = comparison["macro_auroc_diff_seeds_patients"]
    low, high = both["ci"]
    assert comparison["macro_auroc_diff"]["mean"] == pytest.approx(both["mean"]) and low <= both["mean"] <= high
    assert both["df"] >= 2 and both["se"] >= both["se_seeds"] > 0 and 0 < both["p"] <= 1
    assert both["se"] ** 2 == pytest.approx(both["se_seeds"] ** 2 + both["se_patients"] ** 2)
    assert 0 <= comparison["per_seed"][0]["delong_p"]["No Finding"] <= 1
    md = (out / "report.md").read_text()
    _assert_tables_are_well_formed(md)
    assert "## Seed variance per cell" in md and "## Cell comparisons over seeds" in md
    assert "| tiny / original | 3 |" in md and " ± " in md and "validation macro (best epoch)" in md
    assert "smallest two-sided exact Wilcoxon p: with 3 seeds 0.25." in md  # the floor of the p it reports
    assert result["shortcut_probe"][0]["modes"] == ["original", "tight"]
    whiskers, bars = figures.comparison_bars(result)  # the bar chart: one bar per cell, not per run
    assert "seeds" in whiskers and [label for label, _ in bars] == ["tiny / original (3 seeds)", "tiny / tight (3 seeds)"]
    mean, low, high = bars[0][1][-2]  # the macro column
    assert mean == pytest.approx(sum(values) / 3) and (low, high) == (min(values), max(values))


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
    _assert_tables_are_well_formed(md)


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


def test_linked_keys_make_a_variant_pair_one_comparison(tmp_path, images):
    import yaml

    dirs = _grid(tmp_path / "a", images, ("original",), (0, 1)) + _grid(tmp_path / "b", images, ("original",), (0, 1))
    for d, (weights, frozen) in zip(dirs, [("none", 0)] * 2 + [("runs/pre/backbone.weights.h5", 3)] * 2):
        config = yaml.safe_load((d / "config.yaml").read_text())
        config.update(weights=weights, freeze_backbone_epochs=frozen)
        (d / "config.yaml").write_text(yaml.safe_dump(config))
    assert report.evaluate_runs(load_runs(dirs), num_resamples=20)["cell_comparisons"] == []  # two settings differ
    result = report.write_report(load_runs(dirs), tmp_path / "report", num_resamples=20, gradcam_images=0,
                                 linked=[["weights", "freeze_backbone_epochs"]])
    (comparison,) = result["cell_comparisons"]
    assert comparison["differs_in"] == ["freeze_backbone_epochs+weights"] and comparison["seeds"] == [0, 1]
    assert len(result["comparisons"]) == 2  # the same-seed run pairs, one per seed
    assert "| freeze_backbone_epochs+weights | 2 |" in (tmp_path / "report" / "report.md").read_text()
