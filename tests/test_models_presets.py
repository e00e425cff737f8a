"""tfcxr.models.presets: the backbone preset table (its invariants) and get_preset."""

import keras
import pytest

from tfcxr.models.presets import BACKBONE_PRESETS, BACKBONES, PREPROCESSING_MODES, get_preset
from tfcxr.models.preprocessor import CxrPreprocessor

KEYS = {"application", "preprocessing", "channels", "default_image_size", "min_image_size", "description"}


def test_backbones_name_every_preset_and_include_the_cpu_one():
    assert BACKBONES == tuple(BACKBONE_PRESETS)
    assert {"tiny", "resnet50", "densenet121"} | {f"efficientnetb{i}" for i in range(5)} <= set(BACKBONES)


@pytest.mark.parametrize("name", BACKBONES)
def test_every_preset_is_complete_and_buildable(name):
    preset = get_preset(name)
    assert set(preset) == KEYS, name
    assert preset["preprocessing"] in PREPROCESSING_MODES
    assert preset["channels"] in (1, 3)
    assert 0 < preset["min_image_size"] <= preset["default_image_size"]
    assert preset["description"]
    if preset["application"] is None:  # the tiny CNN: gray input in [0, 1]
        assert (preset["preprocessing"], preset["channels"]) == ("unit", 1)
    else:  # keras.applications models take RGB
        assert callable(getattr(keras.applications, preset["application"])), preset["application"]
        assert preset["channels"] == 3 and preset["preprocessing"] != "unit"
    layer = CxrPreprocessor(preset["preprocessing"], preset["channels"])  # the classifier builds exactly this
    assert layer.compute_output_shape((None, 8, 8, 1)) == (None, 8, 8, preset["channels"])


def test_efficientnet_presets_follow_the_scaling():
    sizes = [get_preset(f"efficientnetb{i}")["default_image_size"] for i in range(5)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 5
    assert all(get_preset(f"efficientnetb{i}")["application"] == f"EfficientNetB{i}" for i in range(5))


def test_get_preset_echoes_the_bad_name():
    with pytest.raises(ValueError, match=r"`backbone` must be one of \('tiny'.*Received: backbone='ResNet50'"):
        get_preset("ResNet50")
    assert get_preset("resnet50") is BACKBONE_PRESETS["resnet50"]
