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


def _build(config, manual, data_dir):
    builder = tfds.builder(config if isinstance(config, str) else "nih_cxr14", data_dir=data_dir,
                           **({} if isinstance(config, str) else {"config": config}))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return builder


def _examples(builder):
    return {split: {e["image_id"].decode(): e for e in tfds.as_numpy(builder.as_dataset(split=split))}
            for split in ("train", "validation", "test")}


@pytest.mark.parametrize("size", [256, 512])
def test_masked_configs_store_resized_images_with_cleaned_masks(tmp_path, size):
    """masked_<size> on the dummy data: same curated images and splits as `full`, image and mask of longest side
    `size`, mask 0/255 with the dummy masks' hole filled."""
    manual = BUILDER_DIR / "dummy_data"
    full = _examples(_build("nih_cxr14/full", manual, tmp_path / "tfds"))
    builder = _build(f"nih_cxr14/masked_{size}", manual, tmp_path / "tfds")
    assert builder.builder_config.image_size == size and builder.info.metadata["skipped_missing_masks"] == 0
    assert builder.info.features["mask"].shape == (None, None, 1) and builder.info.features["mask"].dtype == np.uint8
    masked = _examples(builder)
    for split in full:
        assert set(masked[split]) == set(full[split]), split  # the same splits as the default config
    for split, examples in masked.items():
        for image_id, example in examples.items():
            image, mask = example["image"], example["mask"]
            assert image.dtype == mask.dtype == np.uint8
            assert image.shape == mask.shape == (size, round(size * 16 / 20), 1)
            assert set(np.unique(mask)) == {0, 255}, image_id
            distance = example["lung_distance"]
            assert distance.dtype == np.uint8 and distance.shape == mask.shape, image_id
            np.testing.assert_array_equal(distance == 0, mask > 0)  # the map's zero set is the mask
            assert distance.max() > 1, image_id
            np.testing.assert_array_equal(example["labels"], full[split][image_id]["labels"])
    mask = masked["train"][next(iter(masked["train"]))]["mask"][..., 0] > 0
    row = mask[size // 2]  # through the dummy hole (row 10 of 20, column 4 of 16)
    assert row[round(size * 16 / 20 * 4.5 / 16)]  # filled
    assert mask.mean() == pytest.approx(2 * (14 / 20) * (5 / 16 + 4 / 16) / 2, abs=0.04)


def test_masked_config_missing_mask_is_named_or_skipped(tmp_path, monkeypatch):
    manual = make_dummy_data(tmp_path / "manual")
    (manual / "masks" / "00000007_000.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)No lung mask for image 00000007_000\.png.*masks/00000001_000"
                                                r".*TFCXR_NIH_SKIP_MISSING_MASKS=1"):
        _build("nih_cxr14/masked_256", manual, tmp_path / "tfds")
    monkeypatch.setenv("TFCXR_NIH_SKIP_MISSING_MASKS", "1")
    builder = _build("nih_cxr14/masked_256", manual, tmp_path / "tfds_skip")
    assert builder.info.metadata["skipped_missing_masks"] == 1
    assert builder.info.metadata["skipped_missing_masks_examples"] == ["00000007_000.png"]
    assert sum(split.num_examples for split in builder.info.splits.values()) == 15
    monkeypatch.setenv("TFCXR_NIH_SKIP_MISSING_MASKS", "maybe")
    with pytest.raises(ValueError, match=r"Received: TFCXR_NIH_SKIP_MISSING_MASKS='maybe'"):
        _build("nih_cxr14/masked_256", manual, tmp_path / "tfds_bad")
    monkeypatch.delenv("TFCXR_NIH_SKIP_MISSING_MASKS")
    monkeypatch.setenv("TFCXR_NIH_MASKS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"(?s)nowhere: mask folder not found.*masks/00000001_000"):
        _build("nih_cxr14/masked_256", manual, tmp_path / "tfds_other")
    # A config of its own name sets the options in code.
    builder_cls = tfcxr.datasets.register("nih_cxr14")
    own = builder_cls.builder_config_cls(name="masked_256_skip", image_size=256, skip_missing_masks=True,
                                         masks_dir=str(manual / "masks"))
    monkeypatch.delenv("TFCXR_NIH_MASKS_DIR")
    assert _build(own, manual, tmp_path / "tfds_own").info.metadata["skipped_missing_masks"] == 1


@pytest.mark.slow  # a TF-importing subprocess running Beam: ~20-40 s on 2 cores
def test_tfds_build_cli_builds_a_masked_config_on_beam(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    data_dir = tmp_path / "tfds"
    tfds_cli = shutil.which("tfds", path=os.path.dirname(sys.executable))
    command = [tfds_cli, "build", str(BUILDER_DIR), "--config", "masked_256", "--manual_dir",
               str(BUILDER_DIR / "dummy_data"), "--data_dir", str(data_dir),
               "--beam_pipeline_options=runner=DirectRunner"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    splits = tfds.load("nih_cxr14/masked_256", data_dir=data_dir, download=False)
    assert {name: len(list(dataset)) for name, dataset in splits.items()} == {"train": 8, "validation": 4, "test": 4}


def test_masked_configs_generate_on_beam_when_installed(tmp_path):
    beam = pytest.importorskip("apache_beam")
    import pandas as pd

    builder = tfds.builder("nih_cxr14/masked_256", data_dir=tmp_path)
    assert isinstance(builder._generate_examples(pd.DataFrame(), {}, {}), beam.PTransform)
    full = tfds.builder("nih_cxr14/full", data_dir=tmp_path)
    assert not isinstance(full._generate_examples(pd.DataFrame(), {}), beam.PTransform)  # unchanged generator
