"""tfcxr.data.nih_splits: patient-level splits (seeded or official lists) and the leakage check."""

import numpy as np
import pandas as pd
import pytest

from nih_fakes import synthetic_rows, write_2017
from tfcxr.data.nih import CurationConfig, curate
from tfcxr.data.nih_metadata import load_metadata
from tfcxr.data.nih_splits import SPLITS, assign_splits, check_no_leakage
from tfcxr.labels import NO_FINDING


def test_grouped_split_fractions_stratification_and_seed(tmp_path):
    meta = load_metadata(write_2017(tmp_path / "m.csv", synthetic_rows(400)))
    df = curate(meta, CurationConfig(val_fraction=0.1, test_fraction=0.2, seed=3))
    shares = df["split"].value_counts(normalize=True)
    np.testing.assert_allclose([shares["train"], shares["validation"], shares["test"]], [0.7, 0.1, 0.2], atol=0.02)
    for column in ("Mass", NO_FINDING):
        positives = df.groupby("split")[column].sum() / df[column].sum()
        assert abs(positives["test"] - 0.2) < 0.05, column
    check_no_leakage(df)
    again = curate(meta, CurationConfig(val_fraction=0.1, test_fraction=0.2, seed=3))
    pd.testing.assert_series_equal(df["split"], again["split"])
    other = curate(meta, CurationConfig(val_fraction=0.1, test_fraction=0.2, seed=4))
    assert not df["split"].equals(other["split"])


def test_assign_splits_is_the_split_curate_uses(tmp_path):
    meta = load_metadata(write_2017(tmp_path / "m.csv", synthetic_rows(100)))
    df = curate(meta, CurationConfig(seed=5))
    split = assign_splits(df.drop(columns="split"), CurationConfig(seed=5), source=None)
    assert isinstance(split, np.ndarray) and set(split) == set(SPLITS)
    np.testing.assert_array_equal(split, df["split"].to_numpy())
    with pytest.raises(FileNotFoundError, match="official split lists"):
        assign_splits(df, CurationConfig(official_lists_dir=str(tmp_path / "no_lists")))


def test_official_lists_beside_csv(tmp_path):
    rows = synthetic_rows(100)
    meta = load_metadata(write_2017(tmp_path / "Data_Entry_2017.csv", rows))
    test_ids = [row[0] for row in rows if row[3] > 80]
    (tmp_path / "test_list.txt").write_text("\n".join(test_ids) + "\n")
    (tmp_path / "train_val_list.txt").write_text("\n".join(r[0] for r in rows if r[3] <= 80) + "\n")
    df = curate(meta)
    assert set(df.loc[df["split"] == "test", "image_id"]) == set(test_ids) & set(df["image_id"])
    assert {"train", "validation"} <= set(df["split"])
    check_no_leakage(df)

    (tmp_path / "test_list.txt").unlink()
    with pytest.raises(ValueError, match="found only one of the official split lists"):
        curate(meta)


def test_official_lists_missing_image(tmp_path):
    rows = synthetic_rows(30)
    meta = load_metadata(write_2017(tmp_path / "m.csv", rows))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "test_list.txt").write_text(rows[0][0] + "\n")
    (lists / "train_val_list.txt").write_text("\n".join(r[0] for r in rows[2:]) + "\n")
    with pytest.raises(ValueError, match=r"1 curated images are in neither of"):
        curate(meta, CurationConfig(official_lists_dir=str(lists)))


def test_leakage_check_lists_patients():
    df = pd.DataFrame({"patient_id": ["1", "1", "2"], "split": ["train", "test", "test"]})
    with pytest.raises(ValueError, match=r"Patient leakage: 1 patients .*1: \['test', 'train'\]"):
        check_no_leakage(df)
