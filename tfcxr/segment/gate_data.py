"""Images that are not frontal chest X-rays, for fitting and measuring the CXR gate (``tfcxr.segment.gate``).

Three families, all float32 (H, W, 1) in [0, 1]:

- ``transformed(cxr, kind)``: a real CXR rotated by 90/180/270 degrees, flipped left-right or upside down,
  inverted (a MONOCHROME1 image read as MONOCHROME2) or cropped to a random 25-50% window;
- ``synthetic(kind)``: uniform, Gaussian and smoothed noise, a blank image, an intensity ramp, a checkerboard;
- ``photos()``: the natural and scientific photos bundled in scikit-image's ``skimage.data`` (no download), and
  ``faces()``: small face crops from the same package.
"""

from __future__ import annotations

import functools
import pathlib

import cv2
import numpy as np

TRANSFORMS = ("rotate90", "rotate180", "rotate270", "flip_lr", "flip_ud", "invert", "crop")
SYNTHETIC = ("uniform_noise", "gaussian_noise", "smooth_noise", "blank", "gradient", "checkerboard")
PHOTO_SUFFIXES = (".png", ".jpg")
# Bundled skimage.data files that are not photographs of a scene (or are tiny icons); the rest are used.
_NOT_PHOTOS = ("chessboard_GRAY", "chessboard_RGB", "logo", "motorcycle_disp", "multipage", "multipage_rgb",
               "no_time_for_that_tiny")


def transformed(image, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A real CXR image float32 (H, W, 1) in [0, 1] made into a non-frontal-CXR input of `kind`."""
    image = np.asarray(image, np.float32)
    if kind == "rotate90":
        return np.ascontiguousarray(np.rot90(image, 1))
    if kind == "rotate180":
        return np.ascontiguousarray(np.rot90(image, 2))
    if kind == "rotate270":
        return np.ascontiguousarray(np.rot90(image, 3))
    if kind == "flip_lr":
        return np.ascontiguousarray(image[:, ::-1])
    if kind == "flip_ud":
        return np.ascontiguousarray(image[::-1])
    if kind == "invert":
        return 1.0 - image
    if kind == "crop":
        height, width = image.shape[:2]
        side = rng.uniform(0.25, 0.5)
        h, w = max(8, int(height * side)), max(8, int(width * side))
        top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        crop = image[top : top + h, left : left + w, 0]
        return cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)[..., None]
    raise ValueError(f"`kind` must be one of {TRANSFORMS}. Received: kind={kind!r}")


def synthetic(kind: str, rng: np.random.Generator, size=(384, 384)) -> np.ndarray:
    """A generated non-CXR image float32 (H, W, 1) in [0, 1] of `kind`."""
    height, width = size
    if kind == "uniform_noise":
        image = rng.random(size)
    elif kind == "gaussian_noise":
        image = np.clip(rng.normal(rng.uniform(0.3, 0.7), rng.uniform(0.05, 0.3), size), 0, 1)
    elif kind == "smooth_noise":
        sigma = rng.uniform(2, 20)
        image = cv2.GaussianBlur(rng.random(size).astype(np.float32), (0, 0), sigma)
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
    elif kind == "blank":
        image = np.full(size, rng.uniform(0, 1))
    elif kind == "gradient":
        ramp = np.linspace(0, 1, width)[None, :] * np.ones((height, 1))
        image = np.rot90(ramp, rng.integers(4)) if height == width else ramp
    elif kind == "checkerboard":
        cell = int(rng.integers(8, 64))
        ys, xs = np.mgrid[:height, :width]
        image = ((ys // cell + xs // cell) % 2).astype(np.float32)
    else:
        raise ValueError(f"`kind` must be one of {SYNTHETIC}. Received: kind={kind!r}")
    return np.asarray(image, np.float32)[..., None]


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3].astype(np.uint8), cv2.COLOR_RGB2GRAY) if image.shape[-1] >= 3 else \
            image[..., 0]
    scale = 65535.0 if image.dtype == np.uint16 else 255.0 if image.dtype == np.uint8 else max(image.max(), 1e-6)
    return (image.astype(np.float32) / scale)[..., None]


@functools.lru_cache(maxsize=1)
def photos() -> dict[str, np.ndarray]:
    """``{name: float32 (H, W, 1) in [0, 1]}`` of the photos bundled with scikit-image (sorted by name; cached, so
    do not modify the arrays).

    Raises ImportError naming the package when scikit-image is not installed.
    """
    try:
        import skimage.data
    except ImportError as err:
        raise ImportError("The CXR gate's photo negatives come from scikit-image: `pip install scikit-image`.") \
            from err
    folder = pathlib.Path(skimage.data.__file__).parent
    out = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in PHOTO_SUFFIXES and path.stem not in _NOT_PHOTOS:
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is not None:
                out[path.stem] = _gray(image[..., ::-1] if image.ndim == 3 else image)
    return out


def faces(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`count` random face crops (25 x 25, upscaled to 128) from scikit-image's bundled ``lfw_subset``."""
    import skimage.data

    stack = np.load(pathlib.Path(skimage.data.__file__).parent / "lfw_subset.npy", allow_pickle=False)
    picks = rng.choice(len(stack), size=min(count, len(stack)), replace=False)
    return [cv2.resize(np.asarray(stack[i], np.float32), (128, 128))[..., None] for i in picks]


def random_crop(image, rng: np.random.Generator, low: float = 0.5) -> np.ndarray:
    """A random window of `low`-100% of each side of an (H, W, 1) image, at its own size."""
    height, width = image.shape[:2]
    h, w = max(8, int(height * rng.uniform(low, 1))), max(8, int(width * rng.uniform(low, 1)))
    top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    return np.array(image[top : top + h, left : left + w])  # a copy, never a view of `image`
