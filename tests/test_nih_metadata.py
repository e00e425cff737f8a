"""tfcxr.data.nih_metadata: finding and reading NIH metadata CSVs, the image file index."""

import numpy as np
import pandas as pd
import pytest

from nih_fakes import ROWS, write_2017
from tfcxr.data.nih_metadata import METADATA_COLUMNS, METADATA_NAMES, find_images, find_metadata, load_metadata


def test_load_metadata_2017_layout(tmp_path):
    df = load_metadata(write_2017(tmp_path / "Data_Entry_2017.csv"))
    assert list(df.columns) == list(METADATA_COLUMNS)
    assert len(df) == 5 and df.attrs["source"].endswith("Data_Entry_2017.csv")
    assert df["patient_id"].tolist() == ["1", "1", "2", "3", "4"]
    np.testing.assert_allclose(df["age"].tolist(), [58, 58, 0.5, 40, 70])
    assert df["follow_up"].dtype.kind == "i" and df["view"].tolist() == ["PA", "AP", "PA", "AP", "PA"]


def test_load_metadata_v2020_gz_and_labels_csv(tmp_path):
    base = pd.read_csv(write_2017(tmp_path / "a.csv"), index_col=False).iloc[:, :11]
    v2020 = tmp_path / "Data_Entry_2017_v2020.csv.gz"
    base.to_csv(v2020, index=False)  # no trailing column, gzip
    labels = base.iloc[:, :7].assign(orig_mode="L", Mass=0, No_Finding=0)  # nih_cxr14_384 style
    labels.to_csv(tmp_path / "labels.csv", index=False)
    for path in (v2020, tmp_path / "labels.csv"):
        df = load_metadata(path)
        assert list(df.columns) == list(METADATA_COLUMNS) and len(df) == 5
        assert df["finding_labels"].tolist() == [row[1] for row in ROWS]


def test_load_metadata_missing_columns_names_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("Image Index,Labels\nx.png,Mass\n")
    with pytest.raises(ValueError, match=r"bad\.csv: unknown column layout, missing columns \['Finding Labels'"):
        load_metadata(path)


def test_load_metadata_unknown_finding_names_line(tmp_path):
    rows = list(ROWS)
    rows[3] = ("00000003_000.png", "Edema|Covid", 0, 3, "40", "F", "AP")
    path = write_2017(tmp_path / "Data_Entry_2017.csv", rows)
    with pytest.raises(ValueError, match=r"Data_Entry_2017\.csv, line 5 \(image 00000003_000\.png\): unknown finding \['Covid'\]"):
        load_metadata(path)


def test_load_metadata_duplicate_images(tmp_path):
    path = write_2017(tmp_path / "d.csv", [ROWS[0], ROWS[0]])
    with pytest.raises(ValueError, match=r"d\.csv: 1 duplicated image ids"):
        load_metadata(path)


def test_load_metadata_missing_file_and_empty_ids(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv: metadata CSV not found"):
        load_metadata(tmp_path / "nope.csv")
    path = write_2017(tmp_path / "e.csv", [ROWS[0], ("00000009_000.png", "Mass", 0, "", "50", "F", "PA")])
    with pytest.raises(ValueError, match=r"e\.csv, line 3: empty image id or patient id"):
        load_metadata(path)


def test_find_metadata_folder_and_csv(tmp_path):
    csv = write_2017(tmp_path / METADATA_NAMES[0])
    assert find_metadata(tmp_path) == (csv, tmp_path)
    assert find_metadata(csv) == (csv, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no metadata CSV found"):
        find_metadata(empty)
    with pytest.raises(FileNotFoundError, match="no_such_dir: data not found"):
        find_metadata(tmp_path / "no_such_dir")


def test_find_images_layouts(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    (tmp_path / "images_002" / "images").mkdir(parents=True)
    (tmp_path / "images_002" / "images" / "b.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert sorted(find_images(tmp_path)) == ["a.png", "b.png"]
