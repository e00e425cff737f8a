"""Tests for tfcxr.data.nih: the curation policy, its checks, the per-split summary and the CLI."""

import pandas as pd
import pytest

from nih_fakes import ROWS, synthetic_rows, write_2017
from tfcxr.data import nih
from tfcxr.data.nih_metadata import METADATA_COLUMNS, load_metadata
from tfcxr.labels import NO_FINDING, TARGETS


def test_curate_policy_and_label_columns(tmp_path):
    meta = load_metadata(write_2017(tmp_path / "m.csv", synthetic_rows(60, first_patient=10) + ROWS))
    default = nih.curate(meta)
    assert list(default.columns) == [*METADATA_COLUMNS, *TARGETS, NO_FINDING, "split"]
    row = default.set_index("image_id").loc["00000001_000.png"]
    assert (row["Mass"], row["Nodule"], row["Edema"], row[NO_FINDING]) == (1, 1, 0, 0)
    assert "00000002_000.png" not in set(default["image_id"])  # Cardiomegaly only: excluded
    assert default[[*TARGETS, NO_FINDING]].to_numpy().sum(axis=1).min() >= 1

    others = nih.curate(meta, nih.CurationConfig(include_other_findings=True))
    assert len(others) == len(meta)
    row = others.set_index("image_id").loc["00000002_000.png"]
    assert row[[*TARGETS, NO_FINDING]].sum() == 0  # negative for everything

    pa = nih.curate(meta, nih.CurationConfig(views=("pa",)))
    assert set(pa["view"]) == {"PA"}


def test_empty_split_and_empty_curation_raise(tmp_path):
    meta = load_metadata(write_2017(tmp_path / "tiny.csv", ROWS[:2]))  # one patient
    with pytest.raises(ValueError, match=r"tiny\.csv: split\(s\) \['validation', 'test'\] are empty"):
        nih.curate(meta)
    only_other = load_metadata(write_2017(tmp_path / "other.csv", [ROWS[2]]))
    with pytest.raises(ValueError, match=r"other\.csv: no image left after curation"):
        nih.curate(only_other)


def test_config_validation_echoes_value():
    with pytest.raises(ValueError, match=r"Received: views=\('LAT',\)"):
        nih.CurationConfig(views=("LAT",))
    with pytest.raises(ValueError, match="Received: test_fraction=1.5"):
        nih.CurationConfig(test_fraction=1.5)


def test_summary_cli(tmp_path, capsys):
    metadata = write_2017(tmp_path / "m.csv", synthetic_rows(200))
    out = tmp_path / "out"
    assert nih.main(["summary", "--metadata", str(metadata), "--out", str(out), "--seed", "1"]) == 0
    table = pd.read_csv(out / "summary.csv")
    assert list(table.columns) == ["split", "images", "patients", *TARGETS, NO_FINDING]
    assert table["split"].tolist() == ["train", "validation", "test", "all"]
    parts = table.set_index("split")
    assert parts.loc[["train", "validation", "test"], "images"].sum() == parts.loc["all", "images"]
    assert "| split | images | patients |" in capsys.readouterr().out
    assert nih.main(["summary", "--metadata", str(tmp_path / "nope.csv")]) == 2  # a user error: one line, exit 2
    with pytest.raises(SystemExit):
        nih.main(["summary", "--metadata", str(metadata), "--views", "LAT"])


@pytest.mark.real_data
def test_real_nih_metadata(shared_data):
    meta = load_metadata(shared_data / "nih" / "Data_Entry_2017_v2020.csv.gz")
    assert len(meta) == 112_120 and meta["patient_id"].nunique() == 30_805
    df = nih.curate(meta, nih.CurationConfig(views=None))
    assert len(df) == 76_035 and df[NO_FINDING].sum() == 60_361 and df["Mass"].sum() == 5_782
    shares = df["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.2) < 0.01 and abs(shares["validation"] - 0.1) < 0.01


@pytest.mark.real_data
def test_real_nih_cxr14_384_labels(shared_data):
    meta = load_metadata(shared_data / "nih_cxr14_384" / "labels.csv")
    assert len(meta) == 1_245 and meta["patient_id"].nunique() == 894
    df = nih.curate(meta, nih.CurationConfig(views=None, include_other_findings=True))
    counts = df[[*TARGETS, NO_FINDING]].sum().to_dict()
    assert counts == {"Mass": 211, "Nodule": 189, "Pneumonia": 422, "Edema": 173, "Fibrosis": 101, NO_FINDING: 336}
