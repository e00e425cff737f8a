"""Tests for tfcxr.segment.model_card: the Markdown card of a preset, rendered from its ``evaluation.json``."""

import copy
import json

import pytest

from tfcxr.segment import presets
from tfcxr.segment.model_card import render, render_folder, write_model_card


@pytest.fixture
def evaluation():
    """The shipped preset's evaluation payload (a fresh copy per test)."""
    return json.loads((presets.PACKAGED_DIR / presets.DEFAULT_PRESET / "evaluation.json").read_text())


def test_shipped_model_card_renders_from_its_evaluation():
    folder = presets.PACKAGED_DIR / presets.DEFAULT_PRESET
    assert render_folder(folder) == (folder / "MODEL_CARD.md").read_text()
    assert "## Head `classic`" in render_folder(folder) and "## Head" not in render(
        json.loads((folder / "evaluation.json").read_text()))


def test_card_figures_come_from_the_evaluation(evaluation):
    entry = evaluation["tests"]["preset"]["classic"]["gt"]
    entry["dice"].update(mean=0.12345, ci95=[0.1, 0.2], min=0.05)
    entry["hd95"].update(mean=None, max=None)  # no finite HD95 at all
    evaluation["validation"]["weights_dtype_check"]["float32_mean_dice"] = 0.5
    card = render(evaluation)
    row = next(line for line in card.splitlines() if line.startswith("| preset | classic | gt |"))
    assert row == f"| preset | classic | gt | {entry['dice']['n']} | 0.123 [0.100, 0.200] | 0.050 | n/a | None |"
    assert "validation mean Dice 0.5000 in float32" in card and "Weights stored as float16" in card
    assert render(evaluation) == card  # deterministic: the same payload, the same text


def test_gate_section_only_with_a_gate(evaluation):
    card = render(evaluation)
    assert "## CXR gate (`not_cxr`)" in card and f"({evaluation['gate']['threshold']:.4f})" in card
    test = evaluation["gate"]["test"]
    assert f"AUROC {test['auroc']:.4f}" in card
    for kind, value in test["flagged_by_kind"].items():
        assert f"{kind} {value['flagged']:.2f} (n={value['n']})" in card
    del evaluation["gate"]
    plain = render(evaluation)
    assert "CXR gate" not in plain and "## Cost" in plain and "## QC" in plain


def test_pair_counts_table_and_its_absence(evaluation):
    counts = evaluation["pairs"]["counts"]
    datasets = sorted({d for c in counts.values() for d in c})
    lines = render(evaluation).splitlines()
    header = lines.index("| split | " + " | ".join(datasets) + " |")
    assert lines[header - 1] == "" and lines[header + 1] == "|---|" + "---|" * len(datasets)
    first = next(iter(counts))
    assert lines[header + 2] == f"| {first} | " + " | ".join(str(counts[first].get(d, 0)) for d in datasets) + " |"
    without = copy.deepcopy(evaluation)
    del without["pairs"]["counts"]
    assert not any(line.startswith("| split |") for line in render(without).splitlines())


def test_float32_weights_line(evaluation):
    """build_preset with weights_dtype float32 writes one Dice (float32_mean_dice): the card still renders."""
    check = evaluation["validation"]["weights_dtype_check"]
    del check["float16_mean_dice"]
    check.update(float32_mean_dice=0.91234, mean_abs_difference=0.0, max_image_difference=0.0)
    assert "- Weights stored as float32: validation mean Dice 0.9123 in float32 vs 0.9123 " in render(evaluation)


def test_a_missing_figure_is_an_error_not_a_guess(evaluation):
    del evaluation["cost"]["total_s"]
    with pytest.raises(KeyError, match="total_s"):
        render(evaluation)


def test_write_model_card_writes_the_rendered_card(evaluation, tmp_path):
    (tmp_path / "preset").mkdir()
    path = write_model_card(tmp_path / "preset" / "MODEL_CARD.md", evaluation)
    assert path == tmp_path / "preset" / "MODEL_CARD.md" and path.read_text() == render(evaluation)
    assert sorted(p.name for p in path.parent.iterdir()) == ["MODEL_CARD.md"]  # written atomically, no leftovers


def test_gate_section_of_a_cross_fitted_gate_with_a_holdout(evaluation):
    gate = evaluation["gate"]  # the shipped gate is cross-fitted and has a holdout
    cv = gate["cross_validation"]
    card = render(evaluation)
    real = gate["counts"]["train"]["real"] + gate["counts"]["validation"]["real"]
    assert f"{cv['folds']}-fold cross-fitting over train + validation" in card
    assert f"of the {real} out-of-fold real CXRs" in card and "validation: " not in card
    assert f"out of fold: {cv['false_rejection']:.1%} of CXRs and {cv['non_cxr_flagged']:.1%} of" in card
    holdout = next(line for line in card.splitlines() if line.startswith("- Holdout"))
    counts = gate["counts"]["holdout"]
    assert f"({counts['real']} real CXRs, {counts['other']} other inputs)" in holdout
    assert f"real CXRs flagged {gate['holdout']['false_rejection']:.1%}" in holdout


def test_gate_section_of_a_gate_thresholded_on_validation(evaluation):
    gate = evaluation["gate"]
    del gate["cross_validation"], gate["holdout"], gate["counts"]["holdout"]
    gate["validation"] = dict(gate["test"], false_rejection=0.0068, non_cxr_flagged=0.9318)
    card = render(evaluation)
    assert f"Threshold {gate['threshold']:.4f}, set on {gate['counts']['validation']['real']} validation CXRs" in card
    assert "(validation: 0.7% of CXRs and 93.2% of other inputs flagged)" in card
    assert "Holdout" not in card and "cross-fitting" not in card
