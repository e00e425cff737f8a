"""Tests for the nih_cxr14 TFDS builder: dummy_data, the `tfds build` CLI, tfds.load, errors."""


import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import tfcxr.datasets  # noqa: E402  (registers nih_cxr14)
from tfcxr.labels import TARGETS  # noqa: E402

from tfds_helpers import REPO, file_listing, load_builder_folder, run_tfds_build  # noqa: E402

BUILDER_DIR = REPO / "datasets" / "nih_cxr14"


# The TFDS DatasetBuilderTestCase living beside the builder is collected here too.
make_dummy_data, NihCxr14Test = load_builder_folder(BUILDER_DIR, "nih_cxr14", "NihCxr14Test")


def test_committed_dummy_data_matches_generator(tmp_path):
    fresh = make_dummy_data(tmp_path / "dummy")
    committed = BUILDER_DIR / "dummy_data"
    assert file_listing(fresh) == file_listing(committed)
    for name in ("Data_Entry_2017.csv", "train_val_list.txt", "test_list.txt"):
        assert (fresh / name).read_text() == (committed / name).read_text(), name


def test_registered_by_tfcxr_datasets(tmp_path, caplog):
    assert "nih_cxr14" in tfds.list_builders(with_community_datasets=False)
    assert tfcxr.datasets.register("nih_cxr14") is tfds.builder_cls("nih_cxr14")
    assert tfcxr.datasets.register_all(tmp_path) == {}  # no builders there: skipped with a warning
    assert "not found" in caplog.text


@pytest.mark.slow  # a TF-importing subprocess: ~10-25 s on 2 cores
def test_tfds_build_cli_then_load_by_name(tmp_path):
    manual = make_dummy_data(tmp_path / "manual", official_lists=False)  # seeded grouped split
    data_dir = tmp_path / "tfds"
    result = run_tfds_build(BUILDER_DIR, manual, data_dir)
    assert result.returncode == 0, result.stderr[-4000:]

    splits, info = tfds.load("nih_cxr14", data_dir=data_dir, download=False, with_info=True)
    assert set(splits) == {"train", "validation", "test"}
    assert sum(info.splits[name].num_examples for name in splits) == 16
    assert info.features["image"].shape == (None, None, 1)
    patients, examples = {}, {}
    for name, dataset in splits.items():
        assert info.splits[name].num_examples > 0, name
        for example in tfds.as_numpy(dataset):
            image_id = example["image_id"].decode()
            examples[image_id] = example
            patients.setdefault(example["patient_id"].decode(), set()).add(name)
    assert all(len(names) == 1 for names in patients.values())  # no patient in two splits
    assert "00000003_000.png" not in examples and "00000005_001.png" not in examples

    fibrosis = examples["00000005_000.png"]
    np.testing.assert_array_equal(fibrosis["labels"], [0, 0, 0, 0, 1])
    assert fibrosis["labels"].dtype == np.float32 and fibrosis["no_finding"] == 0
    assert (fibrosis["view"], fibrosis["sex"], fibrosis["age"]) == (b"PA", b"F", 45.0)
    assert examples["00000007_000.png"]["no_finding"] == 1
    # 16-bit and RGB sources are stored as the equivalent 8-bit gray image.
    for image_id in ("00000002_000.png", "00000004_000.png", "00000001_000.png"):
        image = examples[image_id]["image"]
        assert image.dtype == np.uint8 and image.shape == (20, 16, 1), image_id
    rng_image = examples["00000002_000.png"]["image"][..., 0].astype(int)
    assert 0 <= rng_image.min() and rng_image.max() <= 255 and rng_image.std() > 50


def test_tfds_load_builds_from_manual_dir(tmp_path):
    dataset = tfds.load(
        "nih_cxr14",
        split="test",
        data_dir=tmp_path / "tfds",
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(manual_dir=str(BUILDER_DIR / "dummy_data"))
        },
        as_supervised=True,
    )
    pairs = list(tfds.as_numpy(dataset))
    assert len(pairs) == 4  # patients 10-12 of test_list.txt
    for image, labels in pairs:
        assert image.dtype == np.uint8 and image.ndim == 3 and labels.shape == (len(TARGETS),)


def test_missing_manual_dir_shows_expected_tree(tmp_path):
    builder = tfds.builder("nih_cxr14", data_dir=tmp_path / "tfds")
    config = tfds.download.DownloadConfig(manual_dir=str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=r"(?s)absent.*images_001/images"):
        builder.download_and_prepare(download_config=config)
    (tmp_path / "no_csv" / "images").mkdir(parents=True)
    (tmp_path / "no_csv" / "images" / "a.png").write_bytes(b"x")
    config = tfds.download.DownloadConfig(manual_dir=str(tmp_path / "no_csv"))
    with pytest.raises(FileNotFoundError, match=r"(?s)no_csv: no metadata CSV found.*Data_Entry_2017_v2020"):
        builder.download_and_prepare(download_config=config)
