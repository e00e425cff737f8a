"""Tests for tfcxr.data.nih: metadata parsing, curation, patient-level splits, CLI."""

import numpy as np
import pandas as pd
import pytest

from tfcxr.data import nih
from tfcxr.labels import NO_FINDING, TARGETS

# The original Data_Entry_2017.csv: "[Width,Height]" headers split in two, trailing empty column.
HEADER_2017 = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
ROWS = [
    ("00000001_000.png", "Mass|Nodule", 0, 1, "058Y", "M", "PA"),
    ("00000001_001.png", "No Finding", 1, 1, "58", "M", "AP"),
    ("00000002_000.png", "Cardiomegaly", 0, 2, "6M", "F", "PA"),
    ("00000003_000.png", "Edema|Effusion", 0, 3, "40", "F", "AP"),
    ("00000004_000.png", "Fibrosis", 0, 4, "70", "M", "PA"),
]


def _write_2017(path, rows=ROWS):
    lines = [HEADER_2017] + [",".join(map(str, row)) + ",2048,2500,0.143,0.143," for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _synthetic_rows(num_patients=300, seed=0, first_patient=1):
    """NIH-like rows: 1-4 images per patient, labels drawn from targets, others and No Finding."""
    rng = np.random.default_rng(seed)
    choices = ["No Finding", "Mass", "Nodule", "Pneumonia", "Edema", "Fibrosis", "Mass|Effusion", "Atelectasis"]
    rows = []
    for patient in range(first_patient, first_patient + num_patients):
        for visit in range(rng.integers(1, 5)):
            label = choices[rng.choice(len(choices), p=[0.4, 0.1, 0.1, 0.08, 0.08, 0.06, 0.08, 0.1])]
            rows.append((f"{patient:08d}_{visit:03d}.png", label, visit, patient, "50", "F", "PA"))
    return rows


def test_load_metadata_2017_layout(tmp_path):
    df = nih.load_metadata(_write_2017(tmp_path / "Data_Entry_2017.csv"))
    assert list(df.columns) == list(nih.METADATA_COLUMNS)
    assert len(df) == 5 and df.attrs["source"].endswith("Data_Entry_2017.csv")
    assert df["patient_id"].tolist() == ["1", "1", "2", "3", "4"]
    np.testing.assert_allclose(df["age"].tolist(), [58, 58, 0.5, 40, 70])
    assert df["follow_up"].dtype.kind == "i" and df["view"].tolist() == ["PA", "AP", "PA", "AP", "PA"]


def test_load_metadata_v2020_gz_and_labels_csv(tmp_path):
    base = pd.read_csv(_write_2017(tmp_path / "a.csv"), index_col=False).iloc[:, :11]
    v2020 = tmp_path / "Data_Entry_2017_v2020.csv.gz"
    base.to_csv(v2020, index=False)  # no trailing column, gzip
    labels = base.iloc[:, :7].assign(orig_mode="L", Mass=0, No_Finding=0)  # nih_cxr14_384 style
    labels.to_csv(tmp_path / "labels.csv", index=False)
    for path in (v2020, tmp_path / "labels.csv"):
        df = nih.load_metadata(path)
        assert list(df.columns) == list(nih.METADATA_COLUMNS) and len(df) == 5
        assert df["finding_labels"].tolist() == [row[1] for row in ROWS]


def test_load_metadata_missing_columns_names_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("Image Index,Labels\nx.png,Mass\n")
    with pytest.raises(ValueError, match=r"bad\.csv: unknown column layout, missing columns \['Finding Labels'"):
        nih.load_metadata(path)


def test_load_metadata_unknown_finding_names_line(tmp_path):
    rows = list(ROWS)
    rows[3] = ("00000003_000.png", "Edema|Covid", 0, 3, "40", "F", "AP")
    path = _write_2017(tmp_path / "Data_Entry_2017.csv", rows)
    with pytest.raises(ValueError, match=r"Data_Entry_2017\.csv, line 5 \(image 00000003_000\.png\): unknown finding \['Covid'\]"):
        nih.load_metadata(path)


def test_load_metadata_duplicate_images(tmp_path):
    path = _write_2017(tmp_path / "d.csv", [ROWS[0], ROWS[0]])
    with pytest.raises(ValueError, match=r"d\.csv: 1 duplicated image ids"):
        nih.load_metadata(path)


def test_curate_policy_and_label_columns(tmp_path):
    meta = nih.load_metadata(_write_2017(tmp_path / "m.csv", _synthetic_rows(60, first_patient=10) + ROWS))
    default = nih.curate(meta)
    assert list(default.columns) == [*nih.METADATA_COLUMNS, *TARGETS, NO_FINDING, "split"]
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


def test_grouped_split_fractions_stratification_and_seed(tmp_path):
    meta = nih.load_metadata(_write_2017(tmp_path / "m.csv", _synthetic_rows(400)))
    df = nih.curate(meta, nih.CurationConfig(val_fraction=0.1, test_fraction=0.2, seed=3))
    shares = df["split"].value_counts(normalize=True)
    np.testing.assert_allclose([shares["train"], shares["validation"], shares["test"]], [0.7, 0.1, 0.2], atol=0.02)
    for column in ("Mass", NO_FINDING):
        positives = df.groupby("split")[column].sum() / df[column].sum()
        assert abs(positives["test"] - 0.2) < 0.05, column
    nih.check_no_leakage(df)
    again = nih.curate(meta, nih.CurationConfig(val_fraction=0.1, test_fraction=0.2, seed=3))
    pd.testing.assert_series_equal(df["split"], again["split"])
    other = nih.curate(meta, nih.CurationConfig(val_fraction=0.1, test_fraction=0.2, seed=4))
    assert not df["split"].equals(other["split"])


def test_official_lists_beside_csv(tmp_path):
    rows = _synthetic_rows(100)
    meta = nih.load_metadata(_write_2017(tmp_path / "Data_Entry_2017.csv", rows))
    test_ids = [row[0] for row in rows if row[3] > 80]
    (tmp_path / "test_list.txt").write_text("\n".join(test_ids) + "\n")
    (tmp_path / "train_val_list.txt").write_text("\n".join(r[0] for r in rows if r[3] <= 80) + "\n")
    df = nih.curate(meta)
    assert set(df.loc[df["split"] == "test", "image_id"]) == set(test_ids) & set(df["image_id"])
    assert {"train", "validation"} <= set(df["split"])
    nih.check_no_leakage(df)

    (tmp_path / "test_list.txt").unlink()
    with pytest.raises(ValueError, match="found only one of the official split lists"):
        nih.curate(meta)


def test_official_lists_missing_image(tmp_path):
    rows = _synthetic_rows(30)
    meta = nih.load_metadata(_write_2017(tmp_path / "m.csv", rows))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "test_list.txt").write_text(rows[0][0] + "\n")
    (lists / "train_val_list.txt").write_text("\n".join(r[0] for r in rows[2:]) + "\n")
    with pytest.raises(ValueError, match=r"1 curated images are in neither of"):
        nih.curate(meta, nih.CurationConfig(official_lists_dir=str(lists)))


def test_leakage_check_lists_patients():
    df = pd.DataFrame({"patient_id": ["1", "1", "2"], "split": ["train", "test", "test"]})
    with pytest.raises(ValueError, match=r"Patient leakage: 1 patients .*1: \['test', 'train'\]"):
        nih.check_no_leakage(df)


def test_empty_split_and_empty_curation_raise(tmp_path):
    meta = nih.load_metadata(_write_2017(tmp_path / "tiny.csv", ROWS[:2]))  # one patient
    with pytest.raises(ValueError, match=r"tiny\.csv: split\(s\) \['validation', 'test'\] are empty"):
        nih.curate(meta)
    only_other = nih.load_metadata(_write_2017(tmp_path / "other.csv", [ROWS[2]]))
    with pytest.raises(ValueError, match=r"other\.csv: no image left after curation"):
        nih.curate(only_other)


def test_config_validation_echoes_value():
    with pytest.raises(ValueError, match=r"Received: views=\('LAT',\)"):
        nih.CurationConfig(views=("LAT",))
    with pytest.raises(ValueError, match="Received: test_fraction=1.5"):
        nih.CurationConfig(test_fraction=1.5)


def test_find_images_layouts(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    (tmp_path / "images_002" / "images").mkdir(parents=True)
    (tmp_path / "images_002" / "images" / "b.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert sorted(nih.find_images(tmp_path)) == ["a.png", "b.png"]


def test_summary_cli(tmp_path, capsys):
    metadata = _write_2017(tmp_path / "m.csv", _synthetic_rows(200))
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
    meta = nih.load_metadata(shared_data / "nih" / "Data_Entry_2017_v2020.csv.gz")
    assert len(meta) == 112_120 and meta["patient_id"].nunique() == 30_805
    df = nih.curate(meta, nih.CurationConfig(views=None))
    assert len(df) == 76_035 and df[NO_FINDING].sum() == 60_361 and df["Mass"].sum() == 5_782
    shares = df["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.2) < 0.01 and abs(shares["validation"] - 0.1) < 0.01


@pytest.mark.real_data
def test_real_nih_cxr14_384_labels(shared_data):
    meta = nih.load_metadata(shared_data / "nih_cxr14_384" / "labels.csv")
    assert len(meta) == 1_245 and meta["patient_id"].nunique() == 894
    df = nih.curate(meta, nih.CurationConfig(views=None, include_other_findings=True))
    counts = df[[*TARGETS, NO_FINDING]].sum().to_dict()
    assert counts == {"Mass": 211, "Nodule": 189, "Pneumonia": 422, "Edema": 173, "Fibrosis": 101, NO_FINDING: 336}
