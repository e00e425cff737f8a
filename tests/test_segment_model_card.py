"""Tests for tfcxr.segment.model_card: the Markdown card of a preset, rendered from its ``evaluation.json``."""

import copy
import json

import pytest

from tfcxr.segment import presets
from tfcxr.segment.model_card import render, write_model_card


@pytest.fixture
def evaluation():
    """The shipped preset's evaluation payload (a fresh copy per test)."""
    return json.loads((presets.PACKAGED_DIR / presets.DEFAULT_PRESET / "evaluation.json").read_text())


def test_shipped_model_card_renders_from_its_evaluation():
    folder = presets.PACKAGED_DIR / presets.DEFAULT_PRESET
    evaluation = json.loads((folder / "evaluation.json").read_text())
    assert render(evaluation) == (folder / "MODEL_CARD.md").read_text()


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
    assert "## CXR gate (`not_cxr`)" in card and f"Threshold {evaluation['gate']['threshold']:.4f}" in card
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
