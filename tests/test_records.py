"""tfcxr.data.records on a tiny synthetic NIH-layout set: curated records, file checks, QC gate, splits."""

import pathlib

import numpy as np
import pandas as pd
import pytest

from pipeline_fakes import pipeline_config, synthetic_set
from tfcxr.data.pipeline import PipelineConfig
from tfcxr.data.records import label_matrix, load_records, mask_path_for, split_records
from tfcxr.labels import TARGETS


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_set(tmp_path_factory.mktemp("syn") / "set")


def test_records_paths_and_labels(synthetic):
    records = load_records(pipeline_config(synthetic))
    assert all(pathlib.Path(path).is_file() for path in records["image_path"])
    assert records["mask_path"].tolist() == [str(mask_path_for(synthetic / "masks", i)) for i in records["image_id"]]
    test = split_records(records, "test")
    labels = label_matrix(test)
    assert labels.dtype == np.float32 and labels.shape == (len(test), len(TARGETS))
    np.testing.assert_array_equal(labels, test[list(TARGETS)].to_numpy())


def test_missing_mask_is_named(synthetic, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for path in sorted((synthetic / "masks").glob("*.png"))[1:]:
        (masks / path.name).write_bytes(path.read_bytes())
    missing = sorted((synthetic / "masks").glob("*.png"))[0].name
    with pytest.raises(FileNotFoundError, match=missing):
        load_records(pipeline_config(synthetic, masks=str(masks), mask="loose"))
    # mask=original does not need masks at all.
    assert len(load_records(pipeline_config(synthetic, masks=None, mask="original")))


def test_not_cxr_flags_are_counted_and_can_be_left_out(synthetic, tmp_path):
    from tfcxr.segment import qc

    masks = tmp_path / "masks"
    masks.mkdir()
    for path in (synthetic / "masks").glob("*.png"):
        (masks / path.name).write_bytes(path.read_bytes())
    records = load_records(pipeline_config(synthetic, masks=str(masks)))
    assert records.attrs["not_cxr"] == {"train": 0, "validation": 0, "test": 0}  # no QC file yet
    flagged = {split: split_records(records, split)["image_id"].iloc[:2].tolist() for split in ("train", "test")}
    with qc.QCWriter(masks / "qc.csv") as writer:
        writer.write([{"stem": pathlib.Path(i).stem, "flags": "not_cxr" if n < 3 else "imbalance"}
                      for n, i in enumerate(flagged["train"] + flagged["test"])])
    kept = load_records(pipeline_config(synthetic, masks=str(masks)))
    assert kept.attrs["not_cxr"] == {"train": 2, "validation": 0, "test": 1} and len(kept) == len(records)
    dropped = load_records(pipeline_config(synthetic, masks=str(masks), exclude_not_cxr=True))
    assert dropped.attrs["not_cxr"] == kept.attrs["not_cxr"]
    assert set(split_records(dropped, "train")["image_id"]) == set(split_records(records, "train")["image_id"]) - set(
        flagged["train"])
    assert len(split_records(dropped, "test")) == len(split_records(records, "test"))  # the test split stays whole


def test_empty_or_unknown_split_and_missing_data(synthetic):
    records = load_records(pipeline_config(synthetic))
    with pytest.raises(ValueError, match="Split 'validation' is empty"):
        split_records(records[records["split"] != "validation"], "validation")
    with pytest.raises(ValueError, match="Received: split='val'"):
        split_records(records, "val")
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        load_records(PipelineConfig(data="no_such_dir", mask="original"))


def test_missing_image_is_named(synthetic, tmp_path):
    (tmp_path / "Data_Entry_2017.csv").write_bytes((synthetic / "Data_Entry_2017.csv").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"images listed in .*Data_Entry_2017\.csv are missing"):
        load_records(PipelineConfig(data=str(tmp_path), mask="original"))


def test_metadata_csv_path_is_accepted(synthetic):
    config = PipelineConfig(data=str(synthetic / "Data_Entry_2017.csv"), mask="original")
    records = load_records(config)
    assert isinstance(records, pd.DataFrame) and set(records["split"]) == {"train", "validation", "test"}
