"""tfcxr.masking: each mode eagerly, batched, in tf.data and in a tf.function."""

import numpy as np
import pytest
import tensorflow as tf

from tfcxr.masking import (
    MASK_MODES,
    apply_mask,
    dilate,
    fill_holes,
    margin_to_pixels,
    parse_margin,
    region_mask,
    MaskSpec,
    lung_boxes,
)


def _lungs(size=64):
    """Two rectangular 'lungs' with a hole in the left one; bool (size, size)."""
    mask = np.zeros((size, size), bool)
    mask[16:48, 8:26] = True
    mask[16:48, 38:56] = True
    mask[28:34, 14:20] = False  # hole
    return mask


def _image(size=64, seed=0):
    return np.random.default_rng(seed).uniform(0.2, 1.0, (size, size, 1)).astype(np.float32)


def test_original_is_identity():
    image = _image()
    np.testing.assert_array_equal(apply_mask(image, _lungs(), "original").numpy(), image)


def test_tight_fills_holes_and_zeroes_background():
    image, lungs = _image(), _lungs()
    out = apply_mask(image, lungs, "tight").numpy()
    assert out.shape == image.shape
    filled = lungs.copy()
    filled[28:34, 14:20] = True
    np.testing.assert_allclose(out[..., 0][filled], image[..., 0][filled])
    assert np.all(out[..., 0][~filled] == 0)


def test_fill_holes_keeps_border_connected_background():
    mask = np.zeros((1, 12, 12, 1), np.float32)
    mask[0, 2:10, 2:10] = 1
    mask[0, 4:6, 4:6] = 0  # enclosed hole
    mask[0, 6:8, 0:4] = 0  # notch open to the border
    filled = fill_holes(tf.constant(mask)).numpy()[0, ..., 0]
    assert filled[4:6, 4:6].all()
    assert not filled[6:8, 2:4].any()


def test_loose_dilates_by_margin_in_pixels_and_fraction():
    lungs = _lungs()
    image = np.ones((64, 64, 1), np.float32)
    tight = apply_mask(image, lungs, "tight").numpy()[..., 0]
    loose_px = apply_mask(image, lungs, "loose", margin=4).numpy()[..., 0]
    loose_frac = apply_mask(image, lungs, "loose", margin=4 / 64).numpy()[..., 0]
    loose_str = apply_mask(image, lungs, "loose", margin="4px").numpy()[..., 0]
    np.testing.assert_array_equal(loose_px, loose_frac)
    np.testing.assert_array_equal(loose_px, loose_str)
    assert loose_px.sum() > tight.sum()
    # Axis-aligned growth is exactly the radius: row 16-4 is kept, row 16-5 is not.
    assert loose_px[12, 16] == 1 and loose_px[11, 16] == 0
    assert np.all(loose_px >= tight)


def test_dilate_is_close_to_a_disk():
    mask = np.zeros((1, 61, 61, 1), np.float32)
    mask[0, 30, 30] = 1
    out = dilate(tf.constant(mask), tf.constant(20)).numpy()[0, ..., 0]
    yy, xx = np.mgrid[:61, :61]
    distance = np.hypot(yy - 30, xx - 30)
    assert out[distance <= 20 * np.cos(np.pi / 8) - 1].all()  # octagon's inscribed disk
    assert not out[distance > 20 / np.cos(np.pi / 8) + 1].any()


def test_box_covers_each_lung_bounding_box_plus_margin():
    lungs = _lungs()
    image = np.ones((64, 64, 1), np.float32)
    box = apply_mask(image, lungs, "box", margin=2).numpy()[..., 0]
    expected = np.zeros((64, 64))
    expected[14:50, 6:28] = 1
    expected[14:50, 36:58] = 1
    np.testing.assert_array_equal(box, expected)


def test_fill_mean_uses_image_mean():
    image, lungs = _image(), _lungs()
    out = apply_mask(image, lungs, "tight", fill="mean").numpy()
    outside = out[..., 0][:2, :2]
    np.testing.assert_allclose(outside, image.mean(), rtol=1e-6)


def test_batched_matches_single():
    images = np.stack([_image(seed=0), _image(seed=1)])
    masks = np.stack([_lungs(), np.roll(_lungs(), 3, axis=1)]).astype(np.float32)[..., None]
    for mode in MASK_MODES:
        batched = apply_mask(images, masks, mode, margin=0.05).numpy()
        assert batched.shape == images.shape
        np.testing.assert_array_equal(apply_mask(images, masks[..., 0], mode, margin=0.05).numpy(), batched)
        for i in range(2):
            np.testing.assert_allclose(batched[i], apply_mask(images[i], masks[i], mode, margin=0.05).numpy())


def test_tf_data_and_tf_function_match_eager():
    """Every mode inside one tf.data map and one tf.function with unknown sizes."""
    image, lungs = _image(), _lungs().astype(np.float32)

    def all_modes(x, m):
        return tuple(apply_mask(x, m, mode, margin="3px", fill="mean") for mode in MASK_MODES)

    eager = [apply_mask(image, lungs, mode, margin="3px", fill="mean").numpy() for mode in MASK_MODES]
    in_data = next(iter(tf.data.Dataset.from_tensors((image, lungs)).map(all_modes)))
    traced = tf.function(
        all_modes, input_signature=[tf.TensorSpec([None, None, 1]), tf.TensorSpec([None, None])]
    )(image, lungs)
    for mode, expected, got_data, got_fn in zip(MASK_MODES, eager, in_data, traced):
        np.testing.assert_allclose(got_data.numpy(), expected, err_msg=mode)
        np.testing.assert_allclose(got_fn.numpy(), expected, err_msg=mode)


def test_region_mask_accepts_bool_and_2d():
    region = region_mask(_lungs(), "tight")
    assert region.shape == (64, 64, 1) and region.dtype == tf.float32


def test_margin_parsing_and_validation_errors():
    assert parse_margin(0.05) == ("fraction", 0.05)
    assert parse_margin("11px") == ("px", 11)
    assert parse_margin(11) == ("px", 11)
    assert parse_margin("0.1") == ("fraction", 0.1)
    assert int(margin_to_pixels(0.05, 224)) == 11
    with pytest.raises(ValueError, match="Received: margin=1.5"):
        parse_margin(1.5)
    with pytest.raises(ValueError, match="Received: margin='wide'"):
        parse_margin("wide")
    with pytest.raises(ValueError, match=r"Received: mask='lose'"):
        apply_mask(_image(), _lungs(), "lose")
    with pytest.raises(ValueError, match=r"Received: fill='white'"):
        apply_mask(_image(), _lungs(), "tight", fill="white")


# --- MaskSpec ------------------------------------------------------------------------------------------


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


def test_inverse_is_the_complement_of_tight_or_loose():
    image, lungs = _image(), _lungs()
    for margin, mode in ((0, "tight"), ("4px", "loose")):
        kept = apply_mask(image, lungs, mode, margin=margin).numpy()
        removed = apply_mask(image, lungs, "inverse", margin=margin).numpy()
        np.testing.assert_allclose(kept + removed, image, atol=1e-7)
        assert np.all((kept == 0) | (removed == 0))
    mean_filled = apply_mask(image, lungs, "inverse", margin=0, fill="mean").numpy()[..., 0]
    np.testing.assert_allclose(mean_filled[20:40, 10:22], image.mean(), rtol=1e-6)  # the lungs became the mean


def test_pixel_margin_counts_training_pixels_at_source():
    """"Npx" is N pixels at spec.image_size: at a 4x larger source it dilates by 4N source pixels."""
    lungs = np.kron(_lungs(), np.ones((4, 4), bool))  # 256 x 256 source
    image = np.ones((256, 256, 1), np.float32)
    spec = MaskSpec("loose", "2px", image_size=64)
    at_source = spec.apply_at_source(image, lungs).numpy()
    np.testing.assert_array_equal(at_source, apply_mask(image, lungs, "loose", margin="8px").numpy())
    # A fraction is a fraction of the width on both paths: 0.05 -> 13 px at 256, 3 px at 64.
    fraction = MaskSpec("loose", 0.05, image_size=64)
    np.testing.assert_array_equal(fraction.apply_at_source(image, lungs).numpy(),
                                  apply_mask(image, lungs, "loose", margin=13).numpy())
    small = np.ones((64, 64, 1), np.float32)
    filled = _lungs()
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
    images = np.stack([_image(seed=0), _image(seed=1)])
    masks = np.stack([_lungs(), np.roll(_lungs(), 3, axis=1)])
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
    hole = _lungs()[28:34, 14:20]
    assert not hole.any()  # tight at training resolution keeps the stored mask as is (cleaned upstream)
    tight = MaskSpec("tight", image_size=64).apply_at_training(images[0], _lungs()).numpy()[..., 0]
    assert np.all(tight[28:34, 14:20] == 0)


def test_mask_spec_resolve_takes_a_spec_its_dict_or_a_default_and_the_shorthands():
    from tfcxr.masking import MaskSpec

    base = MaskSpec("tight", 0.1, "zero", 64)
    assert MaskSpec.resolve(base) is base
    assert MaskSpec.resolve(base.to_dict(), mode="loose") == base.replace(mode="loose")
    assert MaskSpec.resolve(None, MaskSpec("original", image_size=32), fill="mean") == MaskSpec(
        "original", image_size=32, fill="mean")
    assert MaskSpec.resolve(None) == MaskSpec()
    with pytest.raises(ValueError):
        MaskSpec.resolve({"mode": "lose"})
