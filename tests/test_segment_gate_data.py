"""Tests for tfcxr.segment.gate_data: the non-frontal-CXR images (transforms, synthetic, photos, faces) of the gate."""

import numpy as np
import pytest

from tfcxr.segment import gate_data


def test_negative_images_are_valid_inputs():
    rng = np.random.default_rng(0)
    cxr = rng.random((60, 40, 1), dtype=np.float32)
    for kind in gate_data.TRANSFORMS:
        out = gate_data.transformed(cxr, kind, rng)
        assert out.ndim == 3 and out.shape[-1] == 1 and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
    np.testing.assert_array_equal(gate_data.transformed(cxr, "flip_lr", rng), cxr[:, ::-1])
    assert gate_data.transformed(cxr, "rotate90", rng).shape == (40, 60, 1)
    for kind in gate_data.SYNTHETIC:
        out = gate_data.synthetic(kind, rng, size=(32, 32))
        assert out.shape == (32, 32, 1) and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
    with pytest.raises(ValueError, match="kind"):
        gate_data.synthetic("stripes", rng)
    photos = gate_data.photos()
    assert len(photos) >= 15 and "camera" in photos and "chessboard_GRAY" not in photos
    assert all(p.ndim == 3 and p.shape[-1] == 1 and p.max() <= 1 for p in photos.values())
    faces = gate_data.faces(3, rng)
    assert len(faces) == 3 and faces[0].shape == (128, 128, 1)


def test_transforms_keep_the_pixels_and_unknown_kinds_are_errors():
    rng = np.random.default_rng(1)
    cxr = rng.random((48, 36, 1), dtype=np.float32)
    np.testing.assert_allclose(gate_data.transformed(cxr, "invert", rng), 1.0 - cxr)
    np.testing.assert_array_equal(gate_data.transformed(cxr, "flip_ud", rng), cxr[::-1])
    np.testing.assert_array_equal(gate_data.transformed(cxr, "rotate180", rng), cxr[::-1, ::-1])
    np.testing.assert_array_equal(gate_data.transformed(cxr, "rotate270", rng), np.rot90(cxr, 3))
    crop = gate_data.transformed(cxr, "crop", rng)
    assert crop.shape == cxr.shape and cxr.min() <= crop.min() <= crop.max() <= cxr.max()
    assert not np.allclose(crop, cxr)  # a 25-50% window blown up, not the image itself
    with pytest.raises(ValueError, match=r"`kind` must be one of .*Received: kind='mirror'"):
        gate_data.transformed(cxr, "mirror", rng)


def test_the_same_seed_gives_the_same_image():
    """gate_fit caches features by sample key and reloads samples from their seed: both must be reproducible."""
    cxr = np.random.default_rng(2).random((40, 40, 1), dtype=np.float32)
    for kind in gate_data.SYNTHETIC:
        np.testing.assert_array_equal(gate_data.synthetic(kind, np.random.default_rng(5), size=(24, 24)),
                                      gate_data.synthetic(kind, np.random.default_rng(5), size=(24, 24)))
    np.testing.assert_array_equal(gate_data.transformed(cxr, "crop", np.random.default_rng(5)),
                                  gate_data.transformed(cxr, "crop", np.random.default_rng(5)))
    np.testing.assert_array_equal(gate_data.faces(2, np.random.default_rng(5))[1],
                                  gate_data.faces(2, np.random.default_rng(5))[1])


def test_synthetic_kinds_look_like_their_names():
    rng = np.random.default_rng(3)
    blank = gate_data.synthetic("blank", rng, size=(16, 20))
    assert blank.shape == (16, 20, 1) and np.ptp(blank) == 0.0
    board = gate_data.synthetic("checkerboard", rng, size=(64, 64))
    assert set(np.unique(board)) == {0.0, 1.0}
    ramp = gate_data.synthetic("gradient", rng, size=(10, 30))[..., 0]  # not square: always left to right
    np.testing.assert_allclose(ramp[0], np.linspace(0, 1, 30), atol=1e-6)
    assert np.ptp(ramp, axis=0).max() == 0.0


def test_random_crop_is_a_copy_within_its_bounds():
    image = np.random.default_rng(4).random((100, 80, 1), dtype=np.float32)
    rng = np.random.default_rng(0)
    for _ in range(20):
        crop = gate_data.random_crop(image, rng, low=0.5)
        assert 50 <= crop.shape[0] <= 100 and 40 <= crop.shape[1] <= 80 and crop.shape[2] == 1
        assert not np.shares_memory(crop, image)
    tiny = gate_data.random_crop(np.zeros((10, 10, 1), np.float32), rng, low=0.1)
    assert tiny.shape[0] >= 8 and tiny.shape[1] >= 8  # never below 8 pixels a side
    crop[:] = -1.0
    assert image.min() >= 0.0
