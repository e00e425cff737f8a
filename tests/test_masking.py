"""tfcxr.masking: each mode eagerly, batched, in tf.data and in a tf.function."""

import numpy as np
import pytest
import tensorflow as tf

from mask_helpers import random_image, two_lungs
from tfcxr.mask_options import MASK_MODES
from tfcxr.masking import apply_mask, fill_holes, margin_to_pixels, region_mask


def test_original_is_identity():
    image = random_image()
    np.testing.assert_array_equal(apply_mask(image, two_lungs(), "original").numpy(), image)


def test_tight_fills_holes_and_zeroes_background():
    image, lungs = random_image(), two_lungs()
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
    lungs = two_lungs()
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


def test_margin_to_pixels_is_a_constant_when_the_width_is_known():
    assert tf.get_static_value(margin_to_pixels(0.05, 224)) == 11  # 11.2 -> 11
    assert tf.get_static_value(margin_to_pixels("3px", None, pixel_scale=2.5)) == 8  # 7.5 -> 8 (half to even)

    @tf.function(input_signature=[tf.TensorSpec((), tf.int32)])
    def at_run_time(width):
        assert tf.get_static_value(margin_to_pixels(0.05, width)) is None
        return margin_to_pixels(0.05, width)

    assert int(at_run_time(tf.constant(224))) == 11


def test_box_covers_each_lung_bounding_box_plus_margin():
    lungs = two_lungs()
    image = np.ones((64, 64, 1), np.float32)
    box = apply_mask(image, lungs, "box", margin=2).numpy()[..., 0]
    expected = np.zeros((64, 64))
    expected[14:50, 6:28] = 1
    expected[14:50, 36:58] = 1
    np.testing.assert_array_equal(box, expected)


def _boxes_by_loops(mask, margin):
    """`lung_boxes` written out with NumPy loops, one image at a time: bool (height, width) -> float (height, width)."""
    height, width = mask.shape
    counts = mask.sum(axis=0)
    central = range(width // 4, width - width // 4)
    split = min(central, key=lambda c: (counts[c], abs(2 * c - width)))  # emptiest, then nearest the centre
    out = np.zeros((height, width))
    for first, last in ((0, split), (split, width)):
        rows, cols = np.nonzero(mask[:, first:last])
        if rows.size:
            top, bottom = max(rows.min() - margin, 0), rows.max() + margin
            left, right = max(cols.min() + first - margin, 0), cols.max() + first + margin
            out[top : bottom + 1, left : right + 1] = 1
    return out


@pytest.mark.parametrize("shape", [(64, 64), (48, 80), (90, 40)])
def test_lung_boxes_match_a_loop_over_each_image(shape):
    from tfcxr.masking import lung_boxes

    rng = np.random.default_rng(sum(shape))
    masks = np.zeros((5, *shape), bool)
    height, width = shape
    for i in range(1, 5):  # image 0 stays empty
        for side in range(2 if i != 2 else 1):  # image 2: one lung only
            top, left = rng.integers(0, height // 2), rng.integers(side * width // 2, (side + 1) * width // 2 - 4)
            masks[i, top : top + rng.integers(3, height // 2), left : left + rng.integers(2, width // 3)] = True
        masks[i] &= rng.random(shape) > 0.2  # ragged edges, holes
    for margin in (0, 3, 200):  # 200: boxes past the image edge
        for dtype in (bool, np.float32):
            boxes = lung_boxes(tf.constant(masks[..., None].astype(dtype)), tf.constant(margin)).numpy()
            assert boxes.shape == (5, *shape, 1) and boxes.dtype == np.float32
            for mask, box in zip(masks, boxes):
                np.testing.assert_array_equal(box[..., 0], _boxes_by_loops(mask, margin))


def test_fill_mean_uses_image_mean():
    image, lungs = random_image(), two_lungs()
    out = apply_mask(image, lungs, "tight", fill="mean").numpy()
    outside = out[..., 0][:2, :2]
    np.testing.assert_allclose(outside, image.mean(), rtol=1e-6)


def test_batched_matches_single():
    images = np.stack([random_image(seed=0), random_image(seed=1)])
    masks = np.stack([two_lungs(), np.roll(two_lungs(), 3, axis=1)]).astype(np.float32)[..., None]
    for mode in MASK_MODES:
        batched = apply_mask(images, masks, mode, margin=0.05).numpy()
        assert batched.shape == images.shape
        np.testing.assert_array_equal(apply_mask(images, masks[..., 0], mode, margin=0.05).numpy(), batched)
        for i in range(2):
            np.testing.assert_allclose(batched[i], apply_mask(images[i], masks[i], mode, margin=0.05).numpy())


def test_tf_data_and_tf_function_match_eager():
    """Every mode inside one tf.data map and one tf.function with unknown sizes."""
    image, lungs = random_image(), two_lungs().astype(np.float32)

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
    region = region_mask(two_lungs(), "tight")
    assert region.shape == (64, 64, 1) and region.dtype == tf.float32


def test_margin_to_pixels_and_validation_errors():
    assert int(margin_to_pixels(0.05, 224)) == 11
    assert int(margin_to_pixels("2px", 64, pixel_scale=4.0)) == 8
    with pytest.raises(ValueError, match="Received: margin=1.5"):
        apply_mask(random_image(), two_lungs(), "loose", margin=1.5)
    with pytest.raises(ValueError, match=r"Received: mask='lose'"):
        apply_mask(random_image(), two_lungs(), "lose")
    with pytest.raises(ValueError, match=r"Received: fill='white'"):
        apply_mask(random_image(), two_lungs(), "tight", fill="white")


def test_inverse_is_the_complement_of_tight_or_loose():
    image, lungs = random_image(), two_lungs()
    for margin, mode in ((0, "tight"), ("4px", "loose")):
        kept = apply_mask(image, lungs, mode, margin=margin).numpy()
        removed = apply_mask(image, lungs, "inverse", margin=margin).numpy()
        np.testing.assert_allclose(kept + removed, image, atol=1e-7)
        assert np.all((kept == 0) | (removed == 0))
    mean_filled = apply_mask(image, lungs, "inverse", margin=0, fill="mean").numpy()[..., 0]
    np.testing.assert_allclose(mean_filled[20:40, 10:22], image.mean(), rtol=1e-6)  # the lungs became the mean
