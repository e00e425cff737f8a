"""Tests for tfcxr.data.lung_split: the seeded held-out split of the lung pair sets."""

import csv
import pathlib

import pytest

from segment_fakes import write_pairs
from tfcxr.data.lung_split import split_lung_sets


def fake_data_root(root: pathlib.Path) -> pathlib.Path:
    """The three pair sets with 20 V7, 6 Shenzhen/Montgomery and 1 shenzhen_lungs pairs."""
    write_pairs(root / "lungs_v7_covid", size=(48, 48), stems=[f"v{i:02d}" for i in range(20)])
    write_pairs(root / "lungs_shenzhen_montgomery", size=(48, 48),
                stems=[f"CHNCXR_{i:04d}_0" for i in range(4)] + ["MCUCXR_0001_0", "MCUCXR_0002_1"])
    write_pairs(root / "shenzhen_lungs", size=(48, 48), stems=["CHNCXR_0100_0"])
    return root


def _stems(path):
    with open(path, newline="") as handle:
        return {pathlib.Path(row["image_path"]).stem for row in csv.DictReader(handle)}


def test_split_is_seeded_and_the_validation_file_is_disjoint_from_train_and_test(tmp_path):
    data = fake_data_root(tmp_path / "data")
    plain = split_lung_sets(data, tmp_path / "plain", v7_train_max=8, v7_test_max=3)
    with_val = split_lung_sets(data, tmp_path / "val", v7_train_max=8, v7_test_max=3, v7_val_max=5)
    assert plain["stems"] == {k: v for k, v in with_val["stems"].items() if k != "val_v7"}  # same train/test
    assert plain["counts"]["train"] == {"lungs_v7_covid": 8, "lungs_shenzhen_montgomery": 3}
    assert plain["counts"]["test_classic"] == {"lungs_shenzhen_montgomery": 3, "shenzhen_lungs": 1}
    val, train, test = (_stems(tmp_path / "val" / f"{n}.csv") for n in ("val_v7", "train", "test_v7"))
    assert len(val) == 5 and not val & train and not val & test and not (tmp_path / "plain" / "val_v7.csv").exists()
    other_seed = split_lung_sets(data, tmp_path / "seed1", seed=1, v7_train_max=8, v7_test_max=3)
    assert other_seed["stems"]["test_v7"] != plain["stems"]["test_v7"]
    with pytest.raises(ValueError, match="v7-train-max"):
        split_lung_sets(data, tmp_path / "bad", v7_val_max=5)
