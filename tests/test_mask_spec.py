"""tfcxr.mask_spec: MaskSpec validation, its dict/flat/config forms, and masking at source and training resolution."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from mask_helpers import random_image, two_lungs
from tfcxr.mask_options import MASK_MODES
from tfcxr.data.lung_distance import lung_distance
from tfcxr.mask_spec import MaskSpec
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
    # At training resolution (prepared data) a fraction is a fraction of S too: 3 px at 64.
    filled = two_lungs()
    filled[28:34, 14:20] = True
    small = np.ones((1, 64, 64, 1), np.float32)
    np.testing.assert_array_equal(fraction.apply_at_training(small, lung_distance(filled)[None, ..., None]).numpy()[0],
                                  disk_dilation(filled, 3)[..., None].astype(np.float32))


def disk_dilation(lungs, radius):
    """Reference for `loose` at training resolution: every pixel whose distance to the lungs, rounded, is at most
    `radius`, i.e. dilation by the explicit disk dy^2 + dx^2 < (radius + 1/2)^2."""
    offsets = np.arange(-radius - 1, radius + 2)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 < (radius + 0.5) ** 2).astype(np.uint8)
    return cv2.dilate(lungs.astype(np.uint8), disk, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def _training_expected(mode, image, lungs, radius):
    """Reference regions built without distance maps (no hole filling)."""
    region = {
        "original": np.ones_like(lungs),
        "tight": lungs,
        "loose": disk_dilation(lungs, radius),
        "box": lung_boxes(tf.constant(lungs[None, ..., None]), tf.constant(radius)).numpy()[0, ..., 0] > 0.5,
        "inverse": ~disk_dilation(lungs, radius),
    }[mode]
    return image * region[..., None]


def test_apply_at_training_each_mode_from_distance_maps_batched_and_in_tf_data():
    """Training-resolution masking from distance maps: no hole filling, margins at S, exact disks; batched == tf.data."""
    images = np.stack([random_image(seed=0), random_image(seed=1)])
    masks = np.stack([two_lungs(), np.roll(two_lungs(), 3, axis=1)])
    distances = np.stack([lung_distance(m) for m in masks])[..., None]  # (2, 64, 64, 1) uint8
    for mode in MASK_MODES:
        spec = MaskSpec(mode, "3px", "zero", image_size=64)
        batched = spec.apply_at_training(images, distances).numpy()
        for i in range(2):
            np.testing.assert_allclose(batched[i], _training_expected(mode, images[i], masks[i], 3), err_msg=mode)
        in_data = tf.data.Dataset.from_tensor_slices((images, distances)).batch(2).map(spec.apply_at_training)
        np.testing.assert_allclose(next(iter(in_data)).numpy(), batched, err_msg=mode)
    assert not two_lungs()[28:34, 14:20].any()  # tight at training resolution keeps the stored mask as is
    tight = MaskSpec("tight", image_size=64).apply_at_training(images, distances).numpy()[0, ..., 0]
    assert np.all(tight[28:34, 14:20] == 0)
    mean = MaskSpec("loose", "3px", "mean", image_size=64).apply_at_training(images, distances).numpy()
    outside = ~disk_dilation(masks[0], 3)
    np.testing.assert_allclose(mean[0, outside, 0], images[0].mean(), rtol=1e-6)


def test_loose_from_a_distance_map_agrees_with_the_source_paths_octagon():
    """The prepared path's exact disk and the source path's octagon (within 8% of it) keep nearly the same pixels."""
    lungs = two_lungs()
    lungs[28:34, 14:20] = True  # cleaned
    image = np.ones((1, 64, 64, 1), np.float32)
    spec = MaskSpec("loose", "6px", image_size=64)
    disk = spec.apply_at_training(image, lung_distance(lungs)[None, ..., None]).numpy()[0, ..., 0] > 0
    octagon = spec.apply_at_source(image[0], lungs).numpy()[..., 0] > 0
    assert 2 * (disk & octagon).sum() / (disk.sum() + octagon.sum()) > 0.98
    assert (disk & lungs).sum() == lungs.sum() == (octagon & lungs).sum()


def test_apply_at_training_refuses_a_margin_past_the_distance_maps():
    images, distances = np.zeros((1, 512, 512, 1), np.float32), np.zeros((1, 512, 512, 1), np.uint8)
    MaskSpec("loose", "254px", image_size=512).apply_at_training(images, distances)
    with pytest.raises(ValueError, match=r"margin='255px' is 255 px at 512 px; distance maps hold margins up to 254"):
        MaskSpec("loose", "255px", image_size=512).apply_at_training(images, distances)
    MaskSpec("box", "300px", image_size=512).apply_at_training(images, distances)  # boxes read distance 0 only


def test_mask_spec_resolve_takes_a_spec_its_dict_or_a_default_and_the_shorthands():
    base = MaskSpec("tight", 0.1, "zero", 64)
    assert MaskSpec.resolve(base) is base
    assert MaskSpec.resolve(base.to_dict(), mode="loose") == base.replace(mode="loose")
    assert MaskSpec.resolve(None, MaskSpec("original", image_size=32), fill="mean") == MaskSpec(
        "original", image_size=32, fill="mean")
    assert MaskSpec.resolve(None) == MaskSpec()
    with pytest.raises(ValueError):
        MaskSpec.resolve({"mode": "lose"})
