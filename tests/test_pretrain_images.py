"""tfcxr.pretrain_images: patients of images, exclude lists, lung masks and the image cap of `select_images`."""

import cv2
import numpy as np
import pandas as pd
import pytest

from tfcxr.pretrain import PretrainConfig
from tfcxr.pretrain_images import find_image_files, patient_of, read_exclude_list, read_patient_map, select_images


def _write_images(folder, stems):
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        cv2.imwrite(str(folder / f"{stem}.png"), np.full((16, 16), 100, np.uint8))
    return folder


def test_patient_of_reads_metadata_then_nih_file_names(tmp_path):
    csv = tmp_path / "meta.csv"
    pd.DataFrame({"Image Index": ["scan_a.png"], "Patient ID": ["00000013"]}).to_csv(csv, index=False)
    patients = read_patient_map([csv])
    assert patients == {"scan_a": "13"}
    assert patient_of("scan_a", patients) == "13"
    assert patient_of("00000042_001", patients) == "42"
    assert patient_of("photo", patients) is None
    pd.DataFrame({"Image Index": ["x.png"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad\.csv: missing columns \['Patient ID'\]"):
        read_patient_map([tmp_path / "bad.csv"])


def test_read_exclude_list_drops_comments_blanks_and_image_suffixes(tmp_path):
    listed = tmp_path / "exclude.txt"
    listed.write_text("# header\n00000001_000.png\n\n  7  # a patient\nscan_b.JPG\n", encoding="utf-8")
    assert read_exclude_list(listed) == {"00000001_000", "7", "scan_b"}
    with pytest.raises(FileNotFoundError, match="nope.txt: exclude list not found"):
        read_exclude_list(tmp_path / "nope.txt")


def test_find_image_files_is_recursive_and_names_an_empty_folder(tmp_path):
    _write_images(tmp_path / "a" / "deep", ["00000001_000"])
    assert [p.name for p in find_image_files([tmp_path / "a"])] == ["00000001_000.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no PNG/JPEG images found"):
        find_image_files([tmp_path / "empty"])


def test_select_images_excludes_listed_stems_and_patients_and_images_without_masks(tmp_path):
    stems = ["00000001_000", "00000001_001", "00000002_000", "00000003_000", "00000004_000", "00000005_000"]
    images = _write_images(tmp_path / "images", stems)
    masks = _write_images(tmp_path / "masks", stems[:-1])  # the last image has no mask
    (tmp_path / "exclude.txt").write_text("00000003_000\n2\n", encoding="utf-8")
    config = PretrainConfig(images=str(images), batch_size=1, exclude_list=str(tmp_path / "exclude.txt"),
                            mask="tight", masks=str(masks), skip_missing_masks=True)
    frame = select_images(config)
    assert frame["image_id"].tolist() == ["00000001_000.png", "00000001_001.png", "00000004_000.png"]
    assert frame["patient_id"].tolist() == ["1", "1", "4"]
    assert frame["mask_path"].tolist() == [str(masks / f"{s}.png") for s in ("00000001_000", "00000001_001",
                                                                              "00000004_000")]
    assert frame.attrs["excluded"] == {"exclude_list": 2, "no_mask": 1}
    assert len(select_images(PretrainConfig(images=str(images), batch_size=1, max_images=2))) == 2
    with pytest.raises(FileNotFoundError, match="00000005_000.png: lung mask missing"):
        select_images(PretrainConfig(images=str(images), batch_size=1, mask="tight", masks=str(masks)))
    with pytest.raises(ValueError, match="6 images left after exclusions"):
        select_images(PretrainConfig(images=str(images), batch_size=8))
