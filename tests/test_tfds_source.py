"""tfcxr.data.tfds_source: `tfds:nih_cxr14` (mask folder) and a prepared config (stored masks) through the pipeline."""

import pathlib

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfcxr.data.lung_distance import lung_distance
from tfcxr.data.pipeline import PipelineConfig, make_dataset
from tfcxr.data.records import load_records, split_records
from tfcxr.data.tfds_source import is_tfds, tfds_name
from tfcxr.labels import TARGETS
from tfcxr.mask_options import MASK_MODES

DUMMY = pathlib.Path(__file__).resolve().parents[1] / "datasets" / "nih_cxr14" / "dummy_data"


def test_source_names():
    assert is_tfds("tfds:nih_cxr14/masked_512") and not is_tfds("/data/nih")
    assert tfds_name("tfds:nih_cxr14/masked_512") == "nih_cxr14/masked_512"


def test_unprepared_source_needs_a_mask_folder():
    with pytest.raises(ValueError, match="needs a mask folder"):
        load_records(PipelineConfig(data="tfds:nih_cxr14", mask="tight"))


@pytest.mark.slow
def test_tfds_source_matches_its_records(tmp_path):
    """`tfds:nih_cxr14` built from the builder's dummy data: labels follow the records' order."""
    import tensorflow_datasets as tfds

    import tfcxr.datasets

    if not DUMMY.is_dir():
        pytest.skip("nih_cxr14 dummy data not found")
    builder = tfcxr.datasets.register("nih_cxr14")(data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(DUMMY)))
    config = PipelineConfig(data="tfds:nih_cxr14", mask="original", tfds_data_dir=str(tmp_path), image_size=32, batch_size=4)
    records = load_records(config)
    assert set(records["split"]) == {"train", "validation", "test"}
    labels = np.concatenate([y.numpy() for _, y in make_dataset(config, "test", records)])
    np.testing.assert_array_equal(labels, split_records(records, "test")[list(TARGETS)].to_numpy(np.float32))


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
                      for e in stored])  # (4, 32, 32, 1), from the stored masks, not their distance maps
    tight = outputs["tight"] > 0
    # The distance maps' lungs are the stored masks' up to pixels on the masks' edge at S.
    differ = tight != lungs
    assert differ.mean() < 0.02, differ.mean()
    for wrong, lung in zip(differ[..., 0], lungs[..., 0].astype(np.uint8)):
        edge = cv2.dilate(lung, np.ones((3, 3), np.uint8)) != cv2.erode(lung, np.ones((3, 3), np.uint8))
        assert not (wrong & ~edge).any()
    np.testing.assert_allclose(outputs["tight"], outputs["original"] * tight)  # the image itself, where kept
    np.testing.assert_allclose(outputs["inverse"], outputs["original"] * ~tight)  # margin 0: complement of tight
    np.testing.assert_allclose(outputs["loose"], outputs["tight"])  # margin 0
    assert (outputs["box"] > 0).sum() >= tight.sum()
    wide = np.concatenate([x.numpy() for x, _ in make_dataset(config("loose", margin="2px"), "test", records)]) > 0
    assert wide.sum() > tight.sum() and not (tight & ~wide).any()
    for region, image in zip(wide, tight):  # within 2 px at S (and 2 px of the padding away from nothing)
        near = lung_distance(image[..., 0]) <= 2
        assert ((region[..., 0] == near) | ~near).all() and (region[..., 0] != near).mean() < 0.02


def test_prepared_source_refuses_a_margin_past_its_distance_maps(prepared):
    def config(margin):
        return PipelineConfig(data="tfds:nih_cxr14/masked_256", tfds_data_dir=prepared, mask="loose", margin=margin,
                              image_size=232, batch_size=4)

    make_dataset(config("230px"), "train")  # 230 px at 232 is 254 stored pixels: the farthest a map holds
    with pytest.raises(ValueError, match=r"margin='231px' is 231 px at 232 px, 255 px of the stored images of "
                                         r"tfds:nih_cxr14/masked_256, whose distance maps hold up to 254"):
        make_dataset(config("231px"), "train")


def test_a_build_of_another_version_is_named(prepared, tmp_path):
    """A masked build of another version (e.g. 1.0.0, before `lung_distance`) is an error naming it."""
    import shutil

    import tensorflow_datasets as tfds

    import tfcxr.datasets

    tfcxr.datasets.register("nih_cxr14")
    version = str(tfds.builder("nih_cxr14/masked_256", data_dir=prepared).version)  # the masked configs' own
    old = tmp_path / "tfds"
    shutil.copytree(prepared, old)
    (old / "nih_cxr14" / "masked_256" / version).rename(old / "nih_cxr14" / "masked_256" / "1.0.0")
    with pytest.raises(ValueError, match=rf"holds version\(s\) 1\.0\.0, this tfcxr reads {version}; rebuild it"):
        load_records(PipelineConfig(data="tfds:nih_cxr14/masked_256", tfds_data_dir=str(old), mask="loose"))
