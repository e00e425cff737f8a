"""tfcxr.mask_spec: MaskSpec validation, its dict/flat/config forms, and masking at source and training resolution."""

import numpy as np
import pytest
import tensorflow as tf

from mask_helpers import random_image, two_lungs
from tfcxr.mask_options import MASK_MODES
from tfcxr.mask_spec import MaskSpec
from tfcxr.dilation import dilate
from tfcxr.masking import apply_mask, lung_boxes


def test_mask_spec_validates_canonicalises_and_round_trips():
    spec = MaskSpec("loose", "11", "mean", 224)
    assert spec.margin == "11px" and MaskSpec(margin="0.1").margin == 0.1 and MaskSpec(margin=7).margin == "7px"
    assert MaskSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_flat() == {"mask": "loose", "margin": "11px", "fill": "mean", "image_size": 224}
    assert MaskSpec.from_dict(spec.to_flat()) == spec
    assert spec.replace(mode="inverse", fill=None).fill == "mean"
    assert not MaskSpec("original").needs_mask and MaskSpec("inverse").needs_mask
    with pytest.raises(ValueError, match=r"Received: mask='lose'"):
        MaskSpec("lose")
    with pytest.raises(ValueError, match=r"Received: margin=1.5"):
        MaskSpec(margin=1.5)
    with pytest.raises(ValueError, match=r"Received: fill='white'"):
        MaskSpec(fill="white")
    with pytest.raises(ValueError, match=r"Received: image_size=4"):
        MaskSpec(image_size=4)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['radius'\]"):
        MaskSpec.from_dict({"mode": "tight", "radius": 3})


def test_mask_spec_from_config_reads_flat_and_nested_forms():
    flat = {"mask": "box", "margin": "3px", "fill": "zero", "image_size": 64, "backbone": "tiny"}
    nested = {"backbone": "tiny", "mask_spec": {"mode": "box", "margin": "3px", "image_size": 64}}
    sectioned = {"model": {"mask": "box", "image_size": 64}, "data": {"margin": 3}}  # one level down
    expected = MaskSpec("box", "3px", "zero", 64)
    assert MaskSpec.from_config(flat) == MaskSpec.from_config(nested) == MaskSpec.from_config(sectioned) == expected
    assert MaskSpec.from_config({}, default=MaskSpec("original", image_size=32)) == MaskSpec("original", image_size=32)


def test_pixel_margin_counts_training_pixels_at_source():
    """"Npx" is N pixels at spec.image_size: at a 4x larger source it dilates by 4N source pixels."""
    lungs = np.kron(two_lungs(), np.ones((4, 4), bool))  # 256 x 256 source
    image = np.ones((256, 256, 1), np.float32)
    spec = MaskSpec("loose", "2px", image_size=64)
    at_source = spec.apply_at_source(image, lungs).numpy()
    np.testing.assert_array_equal(at_source, apply_mask(image, lungs, "loose", margin="8px").numpy())
    # A fraction is a fraction of the width on both paths: 0.05 -> 13 px at 256, 3 px at 64.
    fraction = MaskSpec("loose", 0.05, image_size=64)
    np.testing.assert_array_equal(fraction.apply_at_source(image, lungs).numpy(),
                                  apply_mask(image, lungs, "loose", margin=13).numpy())
    small = np.ones((64, 64, 1), np.float32)
    filled = two_lungs()
    filled[28:34, 14:20] = True
    np.testing.assert_array_equal(fraction.apply_at_training(small, filled).numpy(),
                                  apply_mask(small, filled, "loose", margin=3).numpy())


def _training_expected(mode, image, lungs, radius):
    """Reference regions built from the low-level ops (no hole filling)."""
    m = tf.constant(lungs.astype(np.float32)[None, ..., None])
    region = {
        "original": tf.ones_like(m),
        "tight": m,
        "loose": dilate(m, tf.constant(radius)),
        "box": lung_boxes(m, tf.constant(radius)),
        "inverse": 1.0 - dilate(m, tf.constant(radius)),
    }[mode].numpy()[0]
    return image * region


def test_apply_at_training_each_mode_eager_batched_and_in_tf_data():
    """Training-resolution masking: no hole filling, margins at S; eager == batched == tf.data.map."""
    images = np.stack([random_image(seed=0), random_image(seed=1)])
    masks = np.stack([two_lungs(), np.roll(two_lungs(), 3, axis=1)])
    for mode in MASK_MODES:
        spec = MaskSpec(mode, "3px", "zero", image_size=64)
        eager = [spec.apply_at_training(images[i], masks[i]).numpy() for i in range(2)]
        for i in range(2):
            np.testing.assert_allclose(eager[i], _training_expected(mode, images[i], masks[i], 3), err_msg=mode)
        batched = spec.apply_at_training(images, masks.astype(np.uint8)[..., None]).numpy()
        np.testing.assert_allclose(batched, np.stack(eager), err_msg=mode)
        in_data = tf.data.Dataset.from_tensor_slices((images, masks)).batch(2).map(spec.apply_at_training)
        np.testing.assert_allclose(next(iter(in_data)).numpy(), batched, err_msg=mode)
        single = tf.data.Dataset.from_tensor_slices((images, masks)).map(spec.apply_at_training)
        np.testing.assert_allclose(np.stack([x.numpy() for x in single]), batched, err_msg=mode)
    hole = two_lungs()[28:34, 14:20]
    assert not hole.any()  # tight at training resolution keeps the stored mask as is (cleaned upstream)
    tight = MaskSpec("tight", image_size=64).apply_at_training(images[0], two_lungs()).numpy()[..., 0]
    assert np.all(tight[28:34, 14:20] == 0)


def test_mask_spec_resolve_takes_a_spec_its_dict_or_a_default_and_the_shorthands():
    base = MaskSpec("tight", 0.1, "zero", 64)
    assert MaskSpec.resolve(base) is base
    assert MaskSpec.resolve(base.to_dict(), mode="loose") == base.replace(mode="loose")
    assert MaskSpec.resolve(None, MaskSpec("original", image_size=32), fill="mean") == MaskSpec(
        "original", image_size=32, fill="mean")
    assert MaskSpec.resolve(None) == MaskSpec()
    with pytest.raises(ValueError):
        MaskSpec.resolve({"mode": "lose"})
