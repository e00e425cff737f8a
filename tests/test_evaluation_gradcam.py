"""Grad-CAM and the re-created classifier inputs (tfcxr.evaluation.gradcam), on a tiny Keras model and fake images."""

import numpy as np
import pytest

from evaluation_fakes import SIZE, tiny_model, write_images
from tfcxr.evaluation import gradcam


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("img"), num_images=4)


@pytest.mark.parametrize("nested", [False, True])
def test_grad_cam_shapes_range_and_probabilities(nested):
    model = tiny_model(nested)
    assert gradcam.find_target_layer(model) == ("backbone/last_conv" if nested else "last_conv")
    x = np.random.default_rng(0).uniform(size=(3, SIZE, SIZE, 1)).astype("float32")
    cams, probs = gradcam.grad_cam(model, x, [0, 1, 4])
    assert cams.shape == (3, SIZE, SIZE) and cams.min() >= 0 and cams.max() <= 1
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="must be"):
        gradcam.grad_cam(model, x[..., 0], 0)


def test_prepare_inputs_applies_the_run_masking(images):
    image_paths, mask_paths = images
    tight, raw, masks = gradcam.prepare_inputs(image_paths[:2], mask_paths[:2], {"mask": "tight"}, SIZE)
    assert tight.shape == raw.shape == (2, SIZE, SIZE, 1) and masks[0].shape == (SIZE, SIZE)
    assert tight[0][~masks[0]].mean() < 0.05 < 0.1 < raw[0][~masks[0]].mean()
    with pytest.raises(ValueError, match="mask_path"):
        gradcam.prepare_inputs(image_paths[:1], [""], {"mask": "tight"}, SIZE)


def test_original_run_inputs_are_the_raw_images(images):
    image_paths, mask_paths = images
    inputs, raw, masks = gradcam.prepare_inputs(image_paths[:2], ["", mask_paths[1]], {"mask": "original"}, SIZE)
    np.testing.assert_array_equal(inputs, raw)
    assert masks[0] is None and masks[1].dtype == bool and masks[1].any()


def test_explicit_layer_and_broadcast_class_match_the_defaults():
    model = tiny_model()
    x = np.random.default_rng(1).uniform(size=(2, SIZE, SIZE, 1)).astype("float32")
    default, _ = gradcam.grad_cam(model, x, 2)
    explicit, _ = gradcam.grad_cam(model, x, [2, 2], layer_name="last_conv")
    np.testing.assert_allclose(default, explicit, atol=1e-6)
    peaks = default.reshape(2, -1).max(axis=1)
    assert np.all((peaks == 0) | np.isclose(peaks, 1.0))  # each map divided by its own maximum


def test_model_without_spatial_layer_is_named():
    import keras

    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(5, activation="sigmoid")(inputs), name="flat_head")
    with pytest.raises(ValueError, match="'flat_head' has no layer with a 4-D spatial output"):
        gradcam.find_target_layer(model)
