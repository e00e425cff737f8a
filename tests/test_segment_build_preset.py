"""Tests for tfcxr.segment.build_preset: a whole preset build on tiny pairs."""

import json

import numpy as np
import pytest

from test_lung_split import fake_data_root
from tfcxr.segment import build_preset, presets


def tiny_config(data_root, **overrides):
    values = dict(
        name="tiny-lungs", data_root=str(data_root),
        split={"seed": 0, "v7_train_max": 10, "v7_test_max": 3, "v7_val_max": 4},
        stages=[{"name": "decoder", "model": "tiny", "epochs": 2, "batch_size": 4, "prior_prompt_fraction": 0.5},
                {"name": "whole", "model": "previous", "epochs": 1, "batch_size": 4, "lr": 1e-5,
                 "freeze_image_encoder": False, "keep_checkpoints": 2}],
        settings_grid={"prompt": ["prior", "refine"], "refine_rounds": [1, 2], "threshold": [0.0, 0.5]},
        mask_definition={"name": "test", "description": "two ellipses"}, baseline="tiny",
        bootstrap_resamples=50, float16_tolerance=0.05)  # tiny 64-px masks: float16 moves a few edge pixels
    values.update(overrides)
    return build_preset.PresetConfig(**values)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    config = tiny_config(fake_data_root(root / "data"))
    return config, root / "out", build_preset.build_preset(config, root / "out")


def test_build_writes_a_loadable_preset_with_its_choices(built):
    from tfcxr.segment import load_segmenter

    config, out, preset_dir = built
    meta = json.loads((preset_dir / "segmenter.json").read_text())
    evaluation = json.loads((preset_dir / "evaluation.json").read_text())
    assert meta["weights"]["dtype"] == "float16" and meta["mask_definition"]["name"] == "test"
    checkpoints = evaluation["validation"]["checkpoints"]
    assert set(checkpoints) == {"decoder/epoch-1", "decoder/epoch-2", "whole/epoch-1"}
    assert len(evaluation["validation"]["settings"]) == 2 * 2 + 2  # prior ignores refine_rounds
    best_setting = max(evaluation["validation"]["settings"].values())
    chosen = evaluation["validation"]["chosen_settings"]
    key = " ".join(f"{k}={chosen[k]}" for k in ("margin", "prompt", "refine_rounds", "threshold")
                   if k in config.settings_grid or k == "margin")
    assert meta["inference"] == chosen
    assert evaluation["validation"]["weights_dtype_check"]["mean_abs_difference"] <= config.float16_tolerance
    model = load_segmenter(str(preset_dir))
    assert model.inference.to_dict() == chosen and model.mask_definition["name"] == "test"
    np.testing.assert_allclose(model.priors, evaluation["priors"], atol=1e-5)
    assert best_setting >= max(v for v in evaluation["validation"]["settings"].values())
    assert key  # every chosen field is a grid field or the default margin


def test_build_evaluates_both_test_sets_for_preset_and_baseline(built):
    _, _, preset_dir = built
    evaluation = json.loads((preset_dir / "evaluation.json").read_text())
    for model in ("preset", "baseline"):
        assert set(evaluation["tests"][model]) == {"classic", "v7"}
        for prompt, entry in evaluation["tests"][model]["classic"].items():
            dice = entry["dice"]
            assert dice["n"] == 4 and dice["min"] <= dice["mean"] <= dice["max"]
            assert dice["ci95"][0] <= dice["mean"] <= dice["ci95"][1]
    refine = evaluation["tests"]["preset"]["v7"]["refine"]
    below = [r for r in refine["per_image"] if r["dice"] < 0.85]
    assert refine["below_flag_dice"] == len(below) and refine["below_flag_dice_flagged"] <= len(below)
    assert "flags" not in evaluation["tests"]["baseline"]["v7"]["refine"]["per_image"][0]
    card = (preset_dir / "MODEL_CARD.md").read_text()
    assert "# Model card: `tiny-lungs`" in card and "two ellipses" in card and "| preset | classic | refine |" in card
    assert f"{refine['dice']['mean']:.3f}" in card


def test_rerun_resumes_and_reproduces_the_weights(built, tmp_path, monkeypatch):
    config, out, preset_dir = built
    history = (out / "work" / "decoder" / "history.csv").read_text()
    digest = json.loads((preset_dir / "segmenter.json").read_text())["weights"]["sha256"]
    monkeypatch.setattr(presets, "PACKAGED_DIR", tmp_path / "package")
    again = build_preset.build_preset(config, out, install=True)
    assert (out / "work" / "decoder" / "history.csv").read_text() == history  # nothing retrained
    assert json.loads((again / "segmenter.json").read_text())["weights"]["sha256"] == digest
    assert (tmp_path / "package" / "tiny-lungs" / "segmenter.json").is_file()


def test_config_errors_name_the_file(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("name: x\nstages: []\ndata_root: /data\n")
    with pytest.raises(ValueError, match="preset.yaml: `stages` must list"):
        build_preset.read_config(path)
    path.write_text("name: x\nstagez: []\n")
    with pytest.raises(ValueError, match=r"preset.yaml: unknown fields \['stagez'\]"):
        build_preset.read_config(path)
    assert build_preset.main(["--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2


def test_shipped_config_parses():
    import pathlib

    config = build_preset.read_config(pathlib.Path(__file__).resolve().parents[1] / "configs"
                                      / "preset_litemedsam_lungs.yaml", data_root="/data/lungs")
    assert config.name == presets.DEFAULT_PRESET and [s["name"] for s in config.stages] == ["decoder", "whole"]
    assert config.stages[1]["model"] == "previous" and config.weights_dtype == "float16"
    assert config.data_root == "/data/lungs"
