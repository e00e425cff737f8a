"""tfcxr.data.pipeline on a tiny synthetic NIH-layout set."""

import pathlib

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfcxr.data.pipeline import PipelineConfig, load_records, make_dataset, split_records
from tfcxr.data.synthetic import SyntheticConfig, generate
from tfcxr.labels import TARGETS
from tfcxr.masking import MASK_MODES


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn") / "set", SyntheticConfig(num_images=48, image_size=64, seed=3))


def _config(synthetic, **kwargs):
    kwargs.setdefault("masks", str(synthetic / "masks"))
    return PipelineConfig(data=str(synthetic), image_size=32, batch_size=8, **kwargs)


def test_each_mode_shapes_ranges_and_labels(synthetic):
    records = load_records(_config(synthetic))
    test = split_records(records, "test")
    for mode in MASK_MODES:
        config = _config(synthetic, mask=mode)
        images, labels = [], []
        for x, y in make_dataset(config, "test", records):
            assert x.dtype == tf.float32 and x.shape[1:] == (32, 32, 1) and y.shape[1:] == (len(TARGETS),)
            images.append(x.numpy())
            labels.append(y.numpy())
        images = np.concatenate(images)
        assert 0.0 <= images.min() and images.max() <= 1.0
        np.testing.assert_array_equal(np.concatenate(labels), test[list(TARGETS)].to_numpy(np.float32))
        if mode == "tight":
            tight_mean = images.mean()
        if mode == "original":
            original_mean = images.mean()
    assert tight_mean < original_mean


def test_train_split_shuffles_augments_and_caches(synthetic, tmp_path):
    config = _config(synthetic, mask="loose", margin="2px", cache=str(tmp_path / "cache"))
    x, y = next(iter(make_dataset(config, "train")))
    assert x.shape == (8, 32, 32, 1) and y.shape == (8, 5)
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    assert list(tmp_path.glob("cache*"))


def test_masking_happens_before_resize(synthetic):
    """With mask=tight and fill=zero, the resized image is 0 where the resized mask is 0 (away from edges)."""
    config = _config(synthetic, mask="tight", augment=False)
    records = load_records(config)
    row = split_records(records, "test").iloc[0]
    x, _ = next(iter(make_dataset(config, "test", records)))
    mask = tf.io.decode_png(tf.io.read_file(row["mask_path"]), channels=1)
    far = tf.nn.max_pool2d(tf.cast(mask[None] > 127, tf.float32), 5, 1, "SAME")  # grown by 2 px
    far = tf.image.resize(far, (32, 32), method="nearest")[0, ..., 0].numpy() == 0
    assert np.all(x.numpy()[0, ..., 0][far] == 0)


def test_missing_mask_is_named(synthetic, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for path in sorted((synthetic / "masks").glob("*.png"))[1:]:
        (masks / path.name).write_bytes(path.read_bytes())
    missing = sorted((synthetic / "masks").glob("*.png"))[0].name
    with pytest.raises(FileNotFoundError, match=missing):
        load_records(_config(synthetic, masks=str(masks), mask="loose"))
    # mask=original does not need masks at all.
    assert len(load_records(_config(synthetic, masks=None, mask="original")))


def test_not_cxr_flags_are_counted_and_can_be_left_out(synthetic, tmp_path):
    from tfcxr.segment import qc

    masks = tmp_path / "masks"
    masks.mkdir()
    for path in (synthetic / "masks").glob("*.png"):
        (masks / path.name).write_bytes(path.read_bytes())
    records = load_records(_config(synthetic, masks=str(masks)))
    assert records.attrs["not_cxr"] == {"train": 0, "validation": 0, "test": 0}  # no QC file yet
    flagged = {split: split_records(records, split)["image_id"].iloc[:2].tolist() for split in ("train", "test")}
    with qc.QCWriter(masks / "qc.csv") as writer:
        writer.write([{"stem": pathlib.Path(i).stem, "flags": "not_cxr" if n < 3 else "imbalance"}
                      for n, i in enumerate(flagged["train"] + flagged["test"])])
    kept = load_records(_config(synthetic, masks=str(masks)))
    assert kept.attrs["not_cxr"] == {"train": 2, "validation": 0, "test": 1} and len(kept) == len(records)
    dropped = load_records(_config(synthetic, masks=str(masks), exclude_not_cxr=True))
    assert dropped.attrs["not_cxr"] == kept.attrs["not_cxr"]
    assert set(split_records(dropped, "train")["image_id"]) == set(split_records(records, "train")["image_id"]) - set(
        flagged["train"])
    assert len(split_records(dropped, "test")) == len(split_records(records, "test"))  # the test split stays whole


def test_empty_split_and_bad_config(synthetic):
    records = load_records(_config(synthetic))
    with pytest.raises(ValueError, match="Split 'validation' is empty"):
        split_records(records[records["split"] != "validation"], "validation")
    with pytest.raises(ValueError, match="Received: split='val'"):
        split_records(records, "val")
    with pytest.raises(ValueError, match="Received: mask='lose'"):
        _config(synthetic, mask="lose")
    with pytest.raises(ValueError, match="needs a mask folder"):
        PipelineConfig(data=str(synthetic), mask="tight")
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        load_records(PipelineConfig(data="no_such_dir", mask="original"))


def test_metadata_csv_path_is_accepted(synthetic):
    config = PipelineConfig(data=str(synthetic / "Data_Entry_2017.csv"), mask="original")
    records = load_records(config)
    assert isinstance(records, pd.DataFrame) and set(records["split"]) == {"train", "validation", "test"}


@pytest.mark.slow
def test_tfds_source_matches_its_records(tmp_path):
    """`tfds:nih_cxr14` built from the builder's dummy data: labels follow the records' order."""
    import pathlib

    import tensorflow_datasets as tfds

    import tfcxr.datasets

    dummy = pathlib.Path(__file__).resolve().parents[1] / "datasets" / "nih_cxr14" / "dummy_data"
    if not dummy.is_dir():
        pytest.skip("nih_cxr14 dummy data not found")
    builder = tfcxr.datasets.register("nih_cxr14")(data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(dummy)))
    config = PipelineConfig(data="tfds:nih_cxr14", mask="original", tfds_data_dir=str(tmp_path), image_size=32, batch_size=4)
    records = load_records(config)
    assert set(records["split"]) == {"train", "validation", "test"}
    labels = np.concatenate([y.numpy() for _, y in make_dataset(config, "test", records)])
    np.testing.assert_array_equal(labels, split_records(records, "test")[list(TARGETS)].to_numpy(np.float32))


@pytest.mark.real_data
def test_real_nih_sample_reads(shared_data):
    """The real nih_cxr14_384 sample (labels.csv + images/): curated records and one batch, mask=original."""
    config = PipelineConfig(data=str(shared_data / "nih_cxr14_384"), mask="original", image_size=64, batch_size=4)
    records = load_records(config)
    assert len(records) > 500 and set(records["split"]) == {"train", "validation", "test"}
    x, y = next(iter(make_dataset(config, "validation", records)))
    assert x.shape == (4, 64, 64, 1) and y.shape == (4, 5)


DUMMY = pathlib.Path(__file__).resolve().parents[1] / "datasets" / "nih_cxr14" / "dummy_data"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """`nih_cxr14/masked_256` built from the builder's dummy data (images and masks/), its TFDS data_dir."""
    tfds = pytest.importorskip("tensorflow_datasets")
    import tfcxr.datasets

    tfcxr.datasets.register("nih_cxr14")
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = tfds.builder("nih_cxr14/masked_256", data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(DUMMY)))
    return str(data_dir)


def test_prepared_source_masks_at_training_resolution(prepared):
    """tfds:nih_cxr14/masked_256: every mode, labels in record order, mask applied after resizing to S."""
    import tensorflow_datasets as tfds

    def config(mode, **kwargs):
        return PipelineConfig(data="tfds:nih_cxr14/masked_256", tfds_data_dir=prepared, mask=mode, image_size=32,
                              batch_size=4, augment=False, **kwargs)

    records = load_records(config("loose"))  # no mask folder needed: the examples carry their masks
    assert records.attrs["prepared"] and (records["mask_path"] == "").all()
    outputs = {}
    for mode in MASK_MODES:
        batches = list(make_dataset(config(mode, margin=0), "test", records))
        images = np.concatenate([x.numpy() for x, _ in batches])
        assert images.shape == (4, 32, 32, 1) and 0.0 <= images.min() and images.max() <= 1.0, mode
        labels = np.concatenate([y.numpy() for _, y in batches])
        np.testing.assert_array_equal(labels, split_records(records, "test")[list(TARGETS)].to_numpy(np.float32))
        outputs[mode] = images
    stored = tfds.load("nih_cxr14/masked_256", split="test", data_dir=prepared, shuffle_files=False)
    lungs = np.stack([tf.image.resize_with_pad(tf.cast(e["mask"] > 0, tf.float32), 32, 32, antialias=True).numpy() > 0.5
                      for e in stored])  # (4, 32, 32, 1)
    np.testing.assert_allclose(outputs["tight"], outputs["original"] * lungs)
    np.testing.assert_allclose(outputs["inverse"], outputs["original"] * ~lungs)  # margin 0: complement of tight
    np.testing.assert_allclose(outputs["loose"], outputs["tight"])  # margin 0
    assert (outputs["box"] > 0).sum() >= (outputs["tight"] > 0).sum()
    wide = np.concatenate([x.numpy() for x, _ in make_dataset(config("loose", margin="2px"), "test", records)])
    assert (wide > 0).sum() > (outputs["tight"] > 0).sum()


def test_pipeline_config_holds_one_mask_spec(synthetic):
    from tfcxr.masking import MaskSpec

    spec = MaskSpec("inverse", "3px", "mean", 48)
    config = PipelineConfig(data=str(synthetic), masks=str(synthetic / "masks"), mask_spec=spec)
    assert config.mask_spec is spec and (config.mask, config.margin, config.fill, config.image_size) == (
        "inverse", "3px", "mean", 48)
    assert PipelineConfig(data=str(synthetic), mask_spec=spec, mask="original", image_size=32).mask_spec == MaskSpec(
        "original", "3px", "mean", 32)  # the shorthands override the spec's fields
    with pytest.raises(ValueError, match="needs a mask folder"):
        load_records(PipelineConfig(data="tfds:nih_cxr14", mask="tight"))
