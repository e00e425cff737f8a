"""Tests for the cxr_lung_masks TFDS builder: dummy_data, the `tfds build` CLI, tfds.load, errors, real folders."""

import sys

import cv2
import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import tfcxr.datasets  # noqa: E402  (registers cxr_lung_masks)
from tfcxr.data.io import ImageReadError  # noqa: E402

from tfds_helpers import REPO, file_listing, load_builder_folder, run_tfds_build  # noqa: E402

BUILDER_DIR = REPO / "datasets" / "cxr_lung_masks"
Builder = tfcxr.datasets.register("cxr_lung_masks")
builder_module = sys.modules[Builder.__module__]


# The TFDS DatasetBuilderTestCase living beside the builder is collected here too.
make_dummy_data, CxrLungMasksTest = load_builder_folder(BUILDER_DIR, "cxr_lung_masks", "CxrLungMasksTest")


def test_committed_dummy_data_matches_generator(tmp_path):
    fresh = make_dummy_data(tmp_path / "dummy")
    committed = BUILDER_DIR / "dummy_data"
    assert file_listing(fresh) == file_listing(committed)


def test_split_is_stable_hash():
    assert builder_module.split_of("MCUCXR_0001_0") == builder_module.split_of("MCUCXR_0001_0")
    splits = [builder_module.split_of(f"img_{i}") for i in range(2000)]
    assert 0.17 < splits.count("test") / len(splits) < 0.23


@pytest.mark.slow  # a TF-importing subprocess: ~10-25 s on 2 cores
def test_tfds_build_cli_then_load_by_name(tmp_path):
    """`tfds build` in a subprocess on all three layouts, then tfds.load by name."""
    manual = make_dummy_data(tmp_path / "manual")
    data_dir = tmp_path / "tfds"
    result = run_tfds_build(BUILDER_DIR, manual, data_dir)
    assert result.returncode == 0, result.stderr[-4000:]

    splits, info = tfds.load("cxr_lung_masks", data_dir=data_dir, download=False, with_info=True)
    assert {name: info.splits[name].num_examples for name in splits} == {"train": 10, "test": 2}
    examples = {}
    for name, dataset in splits.items():
        for example in tfds.as_numpy(dataset):
            examples[example["image_id"].decode()] = example
            assert builder_module.split_of(example["image_id"].decode()) == name
    assert {e["source"].decode() for e in examples.values()} == {"montgomery", "shenzhen", "generic"}
    assert "no_mask" not in examples
    for image_id, example in examples.items():
        image, mask = example["image"], example["mask"]
        assert image.dtype == np.uint8 and image.shape == (32, 32, 1), image_id
        assert mask.shape == image.shape and set(np.unique(mask)) == {0, 1}, image_id
    # Montgomery's left and right masks are merged into one union mask.
    montgomery = examples["MCUCXR_0001_0"]
    assert montgomery["folder"] == b"MontgomerySet"
    left = cv2.imread(str(manual / "MontgomerySet/ManualMask/leftMask/MCUCXR_0001_0.png"), 0) > 0
    right = cv2.imread(str(manual / "MontgomerySet/ManualMask/rightMask/MCUCXR_0001_0.png"), 0) > 0
    np.testing.assert_array_equal(montgomery["mask"][..., 0], (left | right).astype(np.uint8))
    source = cv2.imread(str(manual / "shenzhen/images/CHNCXR_0001_0.png"), 0)
    np.testing.assert_array_equal(examples["CHNCXR_0001_0"]["image"][..., 0], source)


@pytest.mark.parametrize("layout", ["montgomery", "shenzhen", "generic"])
def test_tfds_load_each_layout_in_process(tmp_path, layout):
    full = make_dummy_data(tmp_path / "full")
    folder = {"montgomery": "MontgomerySet", "shenzhen": "shenzhen", "generic": "generic"}[layout]
    manual = full / folder  # the set directly in the manual dir
    splits = tfds.load(
        "cxr_lung_masks",
        data_dir=tmp_path / "tfds",
        download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=str(manual))},
    )
    # Empty splits are left out: only the generic set has test images (generic_002, generic_003).
    assert set(splits) == ({"train", "test"} if layout == "generic" else {"train"})
    examples = [e for dataset in splits.values() for e in tfds.as_numpy(dataset)]
    assert len(examples) == 4
    assert {e["source"].decode() for e in examples} == {layout}
    assert {e["folder"].decode() for e in examples} == {"."}
    assert all(e["mask"].sum() > 0 for e in examples)


def test_as_supervised(tmp_path):
    dataset = tfds.load(
        "cxr_lung_masks",
        split="test",
        data_dir=tmp_path / "tfds",
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(manual_dir=str(BUILDER_DIR / "dummy_data"))
        },
        as_supervised=True,
    )
    for image, mask in tfds.as_numpy(dataset):
        assert image.shape == mask.shape and mask.max() == 1


def test_missing_or_empty_manual_dir_shows_expected_trees(tmp_path):
    builder = tfds.builder("cxr_lung_masks", data_dir=tmp_path / "tfds")
    config = tfds.download.DownloadConfig(manual_dir=str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=r"(?s)absent.*ManualMask/leftMask.*_mask\.png"):
        builder.download_and_prepare(download_config=config)
    (tmp_path / "unrelated" / "images").mkdir(parents=True)
    (tmp_path / "unrelated" / "images" / "a.png").write_bytes(b"x")
    config = tfds.download.DownloadConfig(manual_dir=str(tmp_path / "unrelated"))
    with pytest.raises(FileNotFoundError, match=r"(?s)unrelated: no image/mask pairs.*ManualMask"):
        builder.download_and_prepare(download_config=config)


def test_mask_size_mismatch_names_the_file(tmp_path):
    manual = make_dummy_data(tmp_path / "manual")
    bad = manual / "shenzhen" / "masks" / "CHNCXR_0002_1_mask.png"
    cv2.imwrite(str(bad), np.zeros((16, 32), np.uint8))
    builder = tfds.builder("cxr_lung_masks", data_dir=tmp_path / "tfds")
    with pytest.raises(ImageReadError, match=r"CHNCXR_0002_1_mask\.png.*\(16, 32\)"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))


@pytest.mark.real_data
def test_real_shenzhen_pairs(shared_data, tmp_path):
    dataset = tfds.load(
        "cxr_lung_masks",
        split="train+test",
        data_dir=tmp_path / "tfds",
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(manual_dir=str(shared_data / "shenzhen_lungs"))
        },
    )
    examples = list(tfds.as_numpy(dataset))
    assert len(examples) == 6 and {e["source"] for e in examples} == {b"shenzhen"}
    for example in examples:
        assert example["image"].shape == example["mask"].shape
        assert 0.1 < example["mask"].mean() < 0.6
