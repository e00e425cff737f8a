"""tfcxr.data.pipeline on a tiny synthetic NIH-layout set: masked, resized, batched, augmented datasets."""

import numpy as np
import pytest
import tensorflow as tf

from pipeline_fakes import pipeline_config, synthetic_set
from tfcxr.data.pipeline import PipelineConfig, make_dataset
from tfcxr.data.records import load_records, split_records
from tfcxr.labels import TARGETS
from tfcxr.mask_options import MASK_MODES


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_set(tmp_path_factory.mktemp("syn") / "set")


def test_each_mode_shapes_ranges_and_labels(synthetic):
    records = load_records(pipeline_config(synthetic))
    test = split_records(records, "test")
    for mode in MASK_MODES:
        config = pipeline_config(synthetic, mask=mode)
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
    config = pipeline_config(synthetic, mask="loose", margin="2px", cache=str(tmp_path / "cache"))
    x, y = next(iter(make_dataset(config, "train")))
    assert x.shape == (8, 32, 32, 1) and y.shape == (8, 5)
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    assert list(tmp_path.glob("cache*"))


def test_masking_happens_before_resize(synthetic):
    """With mask=tight and fill=zero, the resized image is 0 where the resized mask is 0 (away from edges)."""
    config = pipeline_config(synthetic, mask="tight", augment=False)
    records = load_records(config)
    row = split_records(records, "test").iloc[0]
    x, _ = next(iter(make_dataset(config, "test", records)))
    mask = tf.io.decode_png(tf.io.read_file(row["mask_path"]), channels=1)
    far = tf.nn.max_pool2d(tf.cast(mask[None] > 127, tf.float32), 5, 1, "SAME")  # grown by 2 px
    far = tf.image.resize(far, (32, 32), method="nearest")[0, ..., 0].numpy() == 0
    assert np.all(x.numpy()[0, ..., 0][far] == 0)


def test_bad_config(synthetic):
    with pytest.raises(ValueError, match="Received: mask='lose'"):
        pipeline_config(synthetic, mask="lose")
    with pytest.raises(ValueError, match="needs a mask folder"):
        PipelineConfig(data=str(synthetic), mask="tight")
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        PipelineConfig(data=str(synthetic), mask="original", batch_size=0)


@pytest.mark.real_data
def test_real_nih_sample_reads(shared_data):
    """The real nih_cxr14_384 sample (labels.csv + images/): curated records and one batch, mask=original."""
    config = PipelineConfig(data=str(shared_data / "nih_cxr14_384"), mask="original", image_size=64, batch_size=4)
    records = load_records(config)
    assert len(records) > 500 and set(records["split"]) == {"train", "validation", "test"}
    x, y = next(iter(make_dataset(config, "validation", records)))
    assert x.shape == (4, 64, 64, 1) and y.shape == (4, 5)


def test_pipeline_config_holds_one_mask_spec(synthetic):
    from tfcxr.mask_spec import MaskSpec

    spec = MaskSpec("inverse", "3px", "mean", 48)
    config = PipelineConfig(data=str(synthetic), masks=str(synthetic / "masks"), mask_spec=spec)
    assert config.mask_spec is spec and (config.mask, config.margin, config.fill, config.image_size) == (
        "inverse", "3px", "mean", 48)
    assert PipelineConfig(data=str(synthetic), mask_spec=spec, mask="original", image_size=32).mask_spec == MaskSpec(
        "original", "3px", "mean", 32)  # the shorthands override the spec's fields
