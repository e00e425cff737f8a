"""Write a tiny manual dir with all three layouts: the committed `dummy_data/` and test fixtures.

    python datasets/cxr_lung_masks/make_dummy_data.py datasets/cxr_lung_masks/dummy_data

Images are 32x32 synthetic radiographs from `tfcxr.data.synthetic` with their
exact lung masks:

    MontgomerySet/CXR_png/MCUCXR_000<k>_<t>.png + ManualMask/{leftMask,rightMask}/  (4 pairs)
    shenzhen/images/CHNCXR_000<k>_<t>.png + masks/CHNCXR_000<k>_<t>_mask.png       (4 pairs)
    generic/images/<id>.png + masks/<id>.png                                        (4 pairs)

plus one generic image without a mask (skipped with a warning). With the
hashed 80/20 split this gives 10 train and 2 test examples.
"""

import argparse
import pathlib

import cv2
import numpy as np

from tfcxr.data import synthetic

NUM_PER_LAYOUT = 4


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"{path}: could not write PNG")


def make_dummy_data(out_dir, image_size=32, seed=0):
    """Write the dummy manual dir to `out_dir`; returns its `pathlib.Path`.

    Args:
        out_dir: destination folder (created).
        image_size: side of the square images and masks.
        seed: seed of the synthetic radiographs.
    """
    out = pathlib.Path(out_dir)
    config = synthetic.SyntheticConfig(num_images=3 * NUM_PER_LAYOUT + 1, image_size=image_size, seed=seed)
    images, masks, _, _ = synthetic.generate_arrays(config)
    masks = masks.astype(np.uint8) * 255
    half = image_size // 2  # the mediastinum separates the lungs: split the union into left and right
    for k in range(NUM_PER_LAYOUT):
        stem = f"MCUCXR_{k + 1:04d}_{k % 2}"
        right, left = masks[k].copy(), masks[k].copy()
        right[:, half:] = 0  # patient's right lung is on the image left
        left[:, :half] = 0
        _write(out / "MontgomerySet" / "CXR_png" / f"{stem}.png", images[k])
        _write(out / "MontgomerySet" / "ManualMask" / "leftMask" / f"{stem}.png", left)
        _write(out / "MontgomerySet" / "ManualMask" / "rightMask" / f"{stem}.png", right)
    for k in range(NUM_PER_LAYOUT):
        stem, i = f"CHNCXR_{k + 1:04d}_{k % 2}", NUM_PER_LAYOUT + k
        _write(out / "shenzhen" / "images" / f"{stem}.png", images[i])
        _write(out / "shenzhen" / "masks" / f"{stem}_mask.png", masks[i])
    for k in range(NUM_PER_LAYOUT):
        stem, i = f"generic_{k:03d}", 2 * NUM_PER_LAYOUT + k
        _write(out / "generic" / "images" / f"{stem}.png", images[i])
        _write(out / "generic" / "masks" / f"{stem}.png", masks[i])
    _write(out / "generic" / "images" / "no_mask.png", images[-1])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(make_dummy_data(args.out_dir, args.image_size, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
