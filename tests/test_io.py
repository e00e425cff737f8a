"""Tests for tfcxr.data.io: every reader on tiny synthetic files made in tmp_path."""

import csv
import logging
import stat

import cv2
import numpy as np
import pytest

from tfcxr.data import io


def _gradient(height=12, width=10, dtype=np.uint8):
    top = np.iinfo(dtype).max
    return np.linspace(0, top, height * width).reshape(height, width).astype(dtype)


def _write(path, array, ext=".png", params=()):
    ok, encoded = cv2.imencode(ext, array, list(params))
    assert ok
    path.write_bytes(encoded.tobytes())
    return path


def _write_dicom(path, pixels, photometric):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


def test_read_8bit_png_exact(tmp_path):
    array = _gradient()
    image = io.read_image(_write(tmp_path / "a.png", array))
    assert image.dtype == np.float32 and image.shape == (12, 10, 1)
    np.testing.assert_allclose(image[..., 0], array / 255.0, atol=1e-7)


def test_read_16bit_png_keeps_precision(tmp_path):
    array = (np.arange(400, dtype=np.uint16) * 3).reshape(20, 20)  # 400 levels below 1200
    image = io.read_image(_write(tmp_path / "a16.png", array))
    assert image.shape == (20, 20, 1)
    np.testing.assert_allclose(image[..., 0], array / 65535.0, atol=1e-7)
    assert len(np.unique(image)) == 400  # not squashed to 8 bits


@pytest.mark.parametrize("channels", [3, 4])
def test_read_rgb_and_rgba_become_gray(tmp_path, channels):
    gray = _gradient()
    color = np.repeat(gray[..., None], channels, axis=-1)
    color[..., 0] = 0  # blue channel differs: the conversion must weigh it
    image = io.read_image(_write(tmp_path / "rgb.png", color))
    expected = cv2.cvtColor(color[..., :3], cv2.COLOR_BGR2GRAY) / 255.0
    assert image.shape == (12, 10, 1)
    np.testing.assert_allclose(image[..., 0], expected, atol=1e-6)


def test_read_jpeg(tmp_path):
    array = np.full((16, 16), 100, np.uint8)
    image = io.read_image(_write(tmp_path / "a.jpg", array, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95)))
    assert image.shape == (16, 16, 1)
    np.testing.assert_allclose(image, 100 / 255.0, atol=2 / 255.0)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_file_raises_naming_it(tmp_path, ext):
    path = _write(tmp_path / f"full{ext}", np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8), ext)
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(io.ImageReadError, match="truncated") as info:
        io.read_image(cut)
    assert str(info.value).startswith(str(cut))


def test_empty_garbage_and_missing_files_raise(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(io.ImageReadError, match=r"empty\.png: empty file"):
        io.read_image(empty)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all" * 4)
    with pytest.raises(io.ImageReadError, match=r"garbage\.png: not a decodable image"):
        io.read_image(garbage)
    with pytest.raises(io.ImageReadError, match=r"missing\.png: cannot read file"):
        io.read_image(tmp_path / "missing.png")


def test_wrong_mode_raises(tmp_path):
    path = _write(tmp_path / "float.tiff", np.ones((4, 4), np.float32), ".tiff")
    with pytest.raises(io.ImageReadError, match="unsupported pixel type float32"):
        io.read_image(path)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_read_dicom_inverts_monochrome1(tmp_path, photometric):
    pixels = np.arange(20, dtype=np.uint16).reshape(4, 5) * 200  # 12-bit range
    image = io.read_image(_write_dicom(tmp_path / "x.dcm", pixels, photometric))
    assert image.dtype == np.float32 and image.shape == (4, 5, 1)
    ramp = pixels / pixels.max()
    expected = 1.0 - ramp if photometric == "MONOCHROME1" else ramp
    np.testing.assert_allclose(image[..., 0], expected, atol=1e-6)


def test_broken_dicom_raises(tmp_path):
    pytest.importorskip("pydicom")
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\x01" * 10)
    with pytest.raises(io.ImageReadError, match=r"broken\.dcm: not a readable DICOM"):
        io.read_image(path)


def test_read_mask_and_shape_check(tmp_path):
    mask = np.zeros((8, 6), np.uint8)
    mask[2:6, 1:4] = 255
    path = _write(tmp_path / "m.png", mask)
    out = io.read_mask(path, expected_shape=(8, 6, 1))
    assert out.dtype == bool and out.sum() == 12
    with pytest.raises(io.ImageReadError, match=r"m\.png: mask shape \(8, 6\) does not match"):
        io.read_mask(path, expected_shape=(8, 7))


def test_write_png_atomic(tmp_path, umask):
    umask(0o027)
    array = _gradient()[..., None]
    path = tmp_path / "sub" / "out.png"
    io.write_png_atomic(path, array)
    assert [p.name for p in path.parent.iterdir()] == ["out.png"]  # no temporary left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the umask's default, not mkstemp's 0600
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), array[..., 0])
    with pytest.raises(ValueError, match="Received: dtype=float64"):
        io.write_png_atomic(path, np.zeros((2, 2)))


def test_read_images_bulk_skips_and_records(tmp_path, caplog):
    good = [_write(tmp_path / f"g{i}.png", _gradient()) for i in range(2)]
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    rejected_csv = tmp_path / "out" / "rejected.csv"
    with caplog.at_level(logging.INFO, logger="tfcxr.data.io"):
        out = list(io.read_images_bulk([good[0], empty, tmp_path / "nope.png", good[1]], rejected_csv))
    assert [p for p, _ in out] == good
    with open(rejected_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == [str(empty), str(tmp_path / "nope.png")]
    assert rows[0]["reason"] == "empty file (0 bytes)"
    assert "Rejected 2 of 4 images" in caplog.text


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def _encoded_samples(tmp_path):
    """(name, bytes, expected float image) for 8-bit, 16-bit, RGB PNG and JPEG."""
    gray8 = _gradient()
    gray16 = _gradient(dtype=np.uint16)
    color = np.stack([gray8, gray8 // 2, gray8], axis=-1)
    jpeg = np.full((16, 16), 100, np.uint8)
    files = {
        "png8": _write(tmp_path / "a.png", gray8),
        "png16": _write(tmp_path / "b.png", gray16),
        "rgb": _write(tmp_path / "c.png", color),
        "jpeg": _write(tmp_path / "d.jpg", jpeg, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95)),
    }
    return [(name, path.read_bytes(), io.read_image(path)) for name, path in files.items()]


def test_decode_image_tf_eager_matches_read_image(tmp_path, tf):
    for name, data, expected in _encoded_samples(tmp_path):
        image = io.decode_image_tf(tf.constant(data))
        assert image.dtype == tf.float32 and image.shape == expected.shape, name
        atol = 1e-6 if name in ("png8", "png16") else 2 / 255.0
        np.testing.assert_allclose(image.numpy(), expected, atol=atol, err_msg=name)


def test_decode_image_tf_inside_tf_data(tmp_path, tf):
    samples = _encoded_samples(tmp_path)
    dataset = tf.data.Dataset.from_tensor_slices([data for _, data, _ in samples])
    dataset = dataset.map(io.decode_image_tf, num_parallel_calls=tf.data.AUTOTUNE)
    assert dataset.element_spec.shape.as_list() == [None, None, 1]
    for (name, _, expected), image in zip(samples, dataset):
        atol = 1e-6 if name in ("png8", "png16") else 2 / 255.0
        np.testing.assert_allclose(image.numpy(), expected, atol=atol, err_msg=name)


def test_decode_image_tf_rejects_other_bytes(tf):
    with pytest.raises(tf.errors.InvalidArgumentError, match="neither PNG nor JPEG"):
        io.decode_image_tf(tf.constant(b"GIF89a not supported"))
