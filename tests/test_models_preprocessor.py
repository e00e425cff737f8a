"""tfcxr.models.preprocessor: CxrPreprocessor normalisation modes, channels, config and dtype."""

import keras
import numpy as np
import pytest

import tfcxr.models as models
from model_helpers import images as _images


@pytest.mark.parametrize(
    "mode, reference",
    [
        ("caffe", lambda x: keras.applications.resnet.preprocess_input(x * 255.0)),
        ("torch", lambda x: keras.applications.densenet.preprocess_input(x * 255.0)),
        ("raw255", lambda x: x * 255.0),
    ],
)
def test_preprocessor_matches_keras_applications(mode, reference):
    gray = _images()
    got = keras.ops.convert_to_numpy(models.CxrPreprocessor(mode, 3)(gray))
    expected = reference(np.repeat(gray, 3, axis=-1))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_bad_names_echo_value():
    with pytest.raises(ValueError, match="Received: mode='imagenet'"):
        models.CxrPreprocessor("imagenet")


def test_bad_channels_echo_value():
    with pytest.raises(ValueError, match=r"`channels` must be 1 or 3. Received: channels=2"):
        models.CxrPreprocessor("unit", 2)


def test_unit_mode_keeps_values_and_repeats_channels():
    gray = _images(size=8)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(models.CxrPreprocessor("unit", 1)(gray)), gray)
    rgb = keras.ops.convert_to_numpy(models.CxrPreprocessor("unit", 3)(gray))
    assert rgb.shape == (2, 8, 8, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel:channel + 1], gray)


def test_single_channel_modes_use_the_channel_mean():
    gray = _images(size=8)
    for mode in ("caffe", "raw255"):
        one = keras.ops.convert_to_numpy(models.CxrPreprocessor(mode, 1)(gray))
        three = keras.ops.convert_to_numpy(models.CxrPreprocessor(mode, 3)(gray))
        assert one.shape == (2, 8, 8, 1)
        np.testing.assert_allclose(one, three.mean(axis=-1, keepdims=True), rtol=1e-5, atol=1e-4)
    torch = keras.ops.convert_to_numpy(models.CxrPreprocessor("torch", 1)(gray))
    mean, std = np.mean([0.485, 0.456, 0.406]), np.mean([0.229, 0.224, 0.225])
    np.testing.assert_allclose(torch, (gray - mean) / std, rtol=1e-5, atol=1e-5)


def test_output_shape_and_config_round_trip():
    layer = models.CxrPreprocessor("torch", 3, name="prep")
    assert layer.compute_output_shape((None, 16, 16, 1)) == (None, 16, 16, 3)
    again = models.CxrPreprocessor.from_config(layer.get_config())
    assert (again.mode, again.channels, again.name) == ("torch", 3, "prep")
    gray = _images(size=8)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again(gray)), keras.ops.convert_to_numpy(layer(gray)))


def test_runs_in_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = models.CxrPreprocessor("caffe", 3)
        out = layer(_images(size=8).astype(np.float16))
        assert layer.compute_dtype == "float32" and keras.backend.standardize_dtype(out.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
