"""tfcxr.config: YAML loading, unknown keys, CLI precedence, saving."""

import pathlib

import pytest

from tfcxr.config import TrainConfig, load_config, read_yaml, resolve_config, save_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mask: tight\nepochs: 3\nmargin: 11px\n")
    config = resolve_config(path, {"epochs": 5, "backbone": None})
    assert (config.mask, config.epochs, config.margin, config.backbone) == ("tight", 5, "11px", "tiny")


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("mask: loose\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*learning_rat"):
        resolve_config(path)


def test_bad_value_echoes_value(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("mask: lose\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*Received: mask='lose'"):
        resolve_config(path)
    with pytest.raises(ValueError, match="Received: precision='half'"):
        TrainConfig(precision="half")


def test_save_and_load_round_trip(tmp_path):
    config = TrainConfig(mask="box", margin=0.1, views=("PA",), cache="none")
    assert config.cache is None
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_shipped_configs_are_valid():
    assert TrainConfig(**read_yaml(REPO / "configs" / "default.yaml")) == TrainConfig()
    assert resolve_config(REPO / "configs" / "nih_efficientnetb0.yaml").backbone == "efficientnetb0"


def test_mask_spec_is_one_object_read_flat_or_nested(tmp_path):
    from tfcxr.mask_spec import MaskSpec

    flat, nested = tmp_path / "flat.yaml", tmp_path / "nested.yaml"
    flat.write_text("mask: inverse\nmargin: 0.1\nfill: mean\nimage_size: 64\n")
    nested.write_text("mask_spec:\n  mode: inverse\n  margin: 0.1\n  fill: mean\n  image_size: 64\n")
    expected = MaskSpec("inverse", 0.1, "mean", 64)
    assert resolve_config(flat).mask_spec == resolve_config(nested).mask_spec == expected
    assert resolve_config(nested, {"mask": "loose"}).mask_spec == expected.replace(mode="loose")  # flags win
    config = resolve_config(nested)
    assert (config.mask, config.margin, config.fill, config.image_size) == ("inverse", 0.1, "mean", 64)
    save_config(config, tmp_path / "run" / "config.yaml")
    saved = read_yaml(tmp_path / "run" / "config.yaml")
    assert {k: saved[k] for k in ("mask", "margin", "fill", "image_size")} == expected.to_flat()  # written flat
    assert "mask_spec" not in saved and load_config(tmp_path / "run" / "config.yaml") == config
    both = tmp_path / "both.yaml"
    both.write_text("mask: tight\nmask_spec:\n  mode: loose\n")
    with pytest.raises(ValueError, match=r"both\.yaml.*not both"):
        resolve_config(both)


def test_bn_momentum_is_checked():
    from tfcxr.config import TrainConfig

    assert TrainConfig(bn_momentum=0.9).bn_momentum == 0.9 and TrainConfig().bn_momentum is None
    with pytest.raises(ValueError, match=r"`bn_momentum` must be in \[0, 1\)"):
        TrainConfig(bn_momentum=1.5)
