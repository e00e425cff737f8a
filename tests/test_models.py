"""tfcxr.models (the package __init__): its exports, and that importing it registers the custom objects.

The behaviour of each submodule is tested in tests/test_models_<submodule>.py.
"""

import keras

import tfcxr.models as models


def test_all_names_are_exported():
    assert len(set(models.__all__)) == len(models.__all__)
    missing = [name for name in models.__all__ if not hasattr(models, name)]
    assert missing == []


def test_custom_objects_are_registered_for_load_model():
    # keras.models.load_model("best.keras") finds these by their registered names, with no custom_objects.
    assert keras.saving.get_registered_object("tfcxr>CxrPreprocessor") is models.CxrPreprocessor
    assert keras.saving.get_registered_object("tfcxr>WeightedBinaryCrossentropy") is models.WeightedBinaryCrossentropy
    assert keras.saving.get_registered_name(models.CxrPreprocessor) == "tfcxr>CxrPreprocessor"
