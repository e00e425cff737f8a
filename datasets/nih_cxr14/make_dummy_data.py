"""Write a tiny NIH-like manual dir: the committed `dummy_data/` and the test fixtures.

    python datasets/nih_cxr14/make_dummy_data.py datasets/nih_cxr14/dummy_data

Layout (see `Builder.MANUAL_DOWNLOAD_INSTRUCTIONS`): `Data_Entry_2017.csv` in
NIH's original format (split `[Width,Height]` header, trailing empty column),
images split between `images/` and `images_001/images/`, optional official
lists, and `masks/<stem>.png` (0/255) for every image file: two rectangular lungs, the left one
with a hole, for the `masked_*` configs. Edge cases: one 16-bit and one RGB PNG (converted), one
Cardiomegaly-only row (not curated), one row without its image file (skipped)
and one image file without a row (ignored).
"""

import argparse
import pathlib

import cv2
import numpy as np

HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
LABELS = ("No Finding", "Mass", "Nodule|Effusion", "Pneumonia", "Edema", "Fibrosis", "Mass|Edema", "No Finding")


def lung_mask(height, width):
    """uint8 (height, width) 0/255: two rectangular lungs, a one-pixel hole in the left one."""
    mask = np.zeros((height, width), np.uint8)
    top, bottom = height // 6, height - height // 6
    mask[top:bottom, width // 8 : width * 3 // 8 + 1] = 255
    mask[top:bottom, width * 5 // 8 : width * 7 // 8] = 255
    mask[height // 2, width // 4] = 0  # a hole: filled by the masked configs
    return mask


def make_dummy_data(out_dir, num_patients=12, image_size=(20, 16), official_lists=True, seed=0):
    """Write the dummy manual dir to `out_dir`.

    Args:
        out_dir: destination folder (created).
        num_patients: patients 1..num_patients with 1-2 images each.
        image_size: (height, width) of the PNGs.
        official_lists: also write train_val_list.txt / test_list.txt (last quarter of patients = test).
        seed: pixel and visit-count seed.

    Returns:
        pathlib.Path of `out_dir`.
    """
    out = pathlib.Path(out_dir)
    rng = np.random.default_rng(seed)
    lines, test_ids, train_val_ids = [HEADER], [], []
    height, width = image_size
    for patient in range(1, num_patients + 1):
        for visit in range(1 + patient % 2):
            image_id = f"{patient:08d}_{visit:03d}.png"
            label = LABELS[(patient + visit) % len(LABELS)]
            if patient == 3 and visit == 0:
                label = "Cardiomegaly"
            view = "PA" if (patient + visit) % 3 else "AP"
            lines.append(f"{image_id},{label},{visit},{patient},{40 + patient},{'MF'[patient % 2]},{view},"
                         f"{width},{height},0.143,0.143,")
            (test_ids if patient > num_patients * 3 // 4 else train_val_ids).append(image_id)
            if patient == 5 and visit == 1:
                continue  # listed, but its file is missing
            folder = out / ("images" if patient % 2 else "images_001/images")
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
            if patient == 2:
                pixels = pixels.astype(np.uint16) * 257  # 16-bit PNG
            elif patient == 4:
                pixels = np.repeat(pixels[..., None], 3, axis=-1)  # RGB PNG
            cv2.imwrite(str(folder / image_id), pixels)
            (out / "masks").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / "masks" / image_id), lung_mask(height, width))
    cv2.imwrite(str(out / "images" / "99999999_000.png"), np.zeros((height, width), np.uint8))  # not in CSV
    (out / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    if official_lists:
        (out / "train_val_list.txt").write_text("\n".join(train_val_ids) + "\n")
        (out / "test_list.txt").write_text("\n".join(test_ids) + "\n")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--official-lists", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    make_dummy_data(args.out_dir, official_lists=args.official_lists)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
