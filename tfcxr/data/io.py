"""Robust chest X-ray image IO: numpy readers (OpenCV, pydicom) and a pure-TF decoder.

Every reader returns `float32 (height, width, 1)` in `[0, 1]`:
- 8-bit PNG/JPEG are divided by 255, 16-bit PNG by 65535 (the same scaling as
  `decode_image_tf`, so training-time and serving-time pixels agree);
- RGB(A) is converted to gray (ITU-R 601 weights, alpha ignored);
- DICOM goes through the modality and VOI LUTs, is min-max scaled (bit depths
  vary between scanners), and `MONOCHROME1` is inverted so that bone is bright.

A file that cannot be read as an image (missing, empty, corrupt, truncated,
unsupported mode) raises `ImageReadError`, whose message starts with the path.
"""

import csv
import logging
import pathlib

import cv2
import numpy as np

from tfcxr.atomic import write_bytes_atomic

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_DICOM_MAGIC_OFFSET = 128  # "DICM" follows a 128-byte preamble.


class ImageReadError(ValueError):
    """A file could not be read as an image. The message starts with the file path."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _is_dicom(path, data):
    return pathlib.Path(path).suffix.lower() in DICOM_SUFFIXES or (
        data[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM"
    )


def _check_complete(path, data):
    """Raise `ImageReadError` when a PNG/JPEG byte string is visibly truncated.

    OpenCV decodes a truncated JPEG into a half-gray image with only a warning,
    so the end markers are checked explicitly: PNG must hold its `IEND` chunk,
    JPEG an end-of-image marker after its last start-of-scan marker.
    """
    if data.startswith(_PNG_MAGIC) and data.rfind(b"IEND") < 0:
        raise ImageReadError(path, "truncated PNG (no IEND chunk)")
    if data.startswith(_JPEG_MAGIC) and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise ImageReadError(path, "truncated JPEG (no end-of-image marker after the last scan)")


def _to_gray_unit(path, array):
    """Convert a decoded array (HxW, HxWx1, HxWx3 BGR or HxWx4 BGRA; uint8/uint16) to float32 (H, W, 1)."""
    if array.size == 0:
        raise ImageReadError(path, f"empty image (shape {array.shape})")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    elif array.ndim == 3 and array.shape[-1] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if array.shape[-1] == 3 else cv2.COLOR_BGRA2GRAY
        array = cv2.cvtColor(array, code)
    elif array.ndim != 2:
        raise ImageReadError(
            path, f"unsupported image mode: shape {array.shape}; expected gray, RGB or RGBA"
        )
    if array.dtype == np.uint8:
        scale = 255.0
    elif array.dtype == np.uint16:
        scale = 65535.0
    else:
        raise ImageReadError(path, f"unsupported pixel type {array.dtype}; expected 8- or 16-bit")
    return (array.astype(np.float32) / scale)[..., None]  # (H, W, 1)


def _read_dicom(path):
    """Read a single-frame DICOM file to float32 (H, W, 1) in [0, 1]."""
    try:
        import pydicom
    except ImportError as err:
        raise ImportError(
            f"Reading DICOM ({path}) needs pydicom: pip install 'tfcxr[dicom]'"
        ) from err
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(str(path))
        pixels = dataset.pixel_array
    except Exception as err:  # pydicom raises many types for broken files
        raise ImageReadError(path, f"not a readable DICOM image ({type(err).__name__}: {err})") from err
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames != 1:
        raise ImageReadError(path, f"multi-frame DICOM ({frames} frames); expected one image")
    if pixels.size == 0:
        raise ImageReadError(path, f"empty image (shape {pixels.shape})")
    if photometric.startswith("MONOCHROME"):
        if pixels.ndim != 2:
            raise ImageReadError(path, f"unsupported DICOM shape {pixels.shape} for {photometric}")
        pixels = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset)
    elif photometric == "RGB" and pixels.ndim == 3 and pixels.shape[-1] == 3:
        pixels = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    else:
        raise ImageReadError(
            path,
            f"unsupported DICOM PhotometricInterpretation {photometric!r} with shape {pixels.shape}",
        )
    pixels = pixels.astype(np.float32)
    low, high = float(pixels.min()), float(pixels.max())
    image = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    if photometric == "MONOCHROME1":  # high values are dark: invert
        image = 1.0 - image
    return image[..., None].astype(np.float32)  # (H, W, 1)


def read_image(path):
    """Read a PNG (8/16-bit), JPEG or DICOM chest X-ray.

    Args:
        path: image file path (`str` or `os.PathLike`).

    Returns:
        image: float32 (height, width, 1) in [0, 1].

    Raises:
        ImageReadError: missing, empty, corrupt or truncated file, or an
            unsupported mode (e.g. 2-channel, 32-bit, multi-frame DICOM).
    """
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as err:
        raise ImageReadError(path, f"cannot read file ({err.strerror or err})") from err
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    if _is_dicom(path, data):
        return _read_dicom(path)
    _check_complete(path, data)
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageReadError(path, "not a decodable image (corrupt, truncated or unknown format)")
    return _to_gray_unit(path, array)


def read_mask(path, expected_shape=None):
    """Read a lung mask (0/255 PNG, union of both lungs).

    Args:
        path: mask file path.
        expected_shape: optional (height, width[, 1]) the mask must match,
            usually the shape of its image.

    Returns:
        mask: bool (height, width), True inside the lungs (pixel > 0.5 of full scale).

    Raises:
        ImageReadError: unreadable file, or a size different from `expected_shape`.
    """
    mask = read_image(path)[..., 0] > 0.5
    if expected_shape is not None and tuple(mask.shape) != tuple(expected_shape)[:2]:
        raise ImageReadError(
            path, f"mask shape {mask.shape} does not match the image shape {tuple(expected_shape)[:2]}"
        )
    return mask


def write_png_atomic(path, array_uint8):
    """Write an 8-bit (or 16-bit) gray PNG atomically (`tfcxr.atomic`; mode 0o666 & ~umask, like `open`).

    Args:
        path: destination `.png` path; parent folders are created.
        array_uint8: uint8 (or uint16) (height, width) or (height, width, 1).
    """
    array = np.asarray(array_uint8)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"`array_uint8` must be uint8 or uint16. Received: dtype={array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0:
        raise ValueError(
            f"`array_uint8` must be (height, width) or (height, width, 1). Received: shape={array.shape}"
        )
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    write_bytes_atomic(path, encoded.tobytes())


def read_images_bulk(paths, rejected_csv=None, reader=read_image):
    """Read many images, skipping the bad ones.

    Each unreadable file is logged (warning) and, when `rejected_csv` is given,
    appended to that CSV (columns `path, reason`; written as it goes, so a
    partial run keeps its record). The number of rejected files is logged when
    the iteration ends.

    Args:
        paths: iterable of file paths.
        rejected_csv: optional CSV path for the rejected files.
        reader: callable `path -> array` raising `ImageReadError` (default `read_image`).

    Yields:
        (path, image) with image float32 (height, width, 1) in [0, 1].
    """
    rejected = 0
    total = 0
    handle = None
    writer = None
    if rejected_csv is not None:
        rejected_csv = pathlib.Path(rejected_csv)
        rejected_csv.parent.mkdir(parents=True, exist_ok=True)
        handle = open(rejected_csv, "w", newline="", encoding="utf-8")
        writer = csv.writer(handle)
        writer.writerow(["path", "reason"])
        handle.flush()
    try:
        for path in paths:
            total += 1
            try:
                image = reader(path)
            except ImageReadError as err:
                rejected += 1
                logger.warning("Skipping %s", err)
                if writer is not None:
                    writer.writerow([str(path), err.reason])
                    handle.flush()
                continue
            yield path, image
    finally:
        if handle is not None:
            handle.close()
        where = f"; listed in {rejected_csv}" if rejected_csv is not None else ""
        log = logger.warning if rejected else logger.info
        log("Rejected %d of %d images%s", rejected, total, where)


def decode_image_tf(image_bytes):
    """Decode PNG (8/16-bit) or JPEG bytes with pure TF ops (tf.data and SavedModel safe).

    Args:
        image_bytes: tf.string scalar, the encoded file.

    Returns:
        image: tf.float32 (height, width, 1) in [0, 1]. 8-bit values are v/255
        and 16-bit values v/65535, as in `read_image`; RGB(A) becomes gray with
        ITU-R 601 weights.

    Raises:
        tf.errors.InvalidArgumentError (at run time): bytes neither PNG nor JPEG,
        or a corrupt file.
    """
    import tensorflow as tf

    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    header = tf.strings.substr(image_bytes, 0, 8)
    is_png = tf.equal(header, _PNG_MAGIC)
    is_jpeg = tf.equal(tf.strings.substr(header, 0, 3), _JPEG_MAGIC)
    check = tf.debugging.Assert(
        tf.logical_or(is_png, is_jpeg), ["decode_image_tf: the bytes are neither PNG nor JPEG"]
    )

    def decode_png():
        # uint16 output keeps 16-bit PNGs exact and expands 8-bit ones by 257,
        # so the float conversion gives v/255 and v/65535 respectively.
        image = tf.io.decode_png(image_bytes, channels=0, dtype=tf.uint16)  # (H, W, C)
        image = tf.image.convert_image_dtype(image, tf.float32)
        return tf.cond(
            tf.shape(image)[-1] >= 3,
            lambda: tf.image.rgb_to_grayscale(image[..., :3]),
            lambda: image[..., :1],
        )  # (H, W, 1)

    def decode_jpeg():
        image = tf.io.decode_jpeg(image_bytes, channels=1)  # (H, W, 1) uint8
        return tf.image.convert_image_dtype(image, tf.float32)

    with tf.control_dependencies([check]):
        image = tf.cond(is_png, decode_png, decode_jpeg)
    image.set_shape([None, None, 1])
    return image
