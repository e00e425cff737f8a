"""Tests of tfcxr.data.pairs: the three layouts, nesting, errors, real folders, and loading pairs into memory."""

import csv
import logging
import sys

import cv2
import numpy as np
import pytest

from segment_fakes import write_pairs
from tfcxr.data import pairs
from tfcxr.data.io import ImageReadError


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _image(seed, shape=(40, 32)):
    return np.random.default_rng(seed).integers(0, 255, size=shape, dtype=np.uint8)


def _half_mask(shape, side):
    mask = np.zeros(shape, np.uint8)
    if side == "left":
        mask[5:35, 2:14] = 255
    else:
        mask[5:35, 18:30] = 255
    return mask


def make_montgomery(root, stems=("MCUCXR_0001_0", "MCUCXR_0002_1")):
    for i, stem in enumerate(stems):
        _write(root / "CXR_png" / f"{stem}.png", _image(i))
        _write(root / "ManualMask" / "leftMask" / f"{stem}.png", _half_mask((40, 32), "left"))
        _write(root / "ManualMask" / "rightMask" / f"{stem}.png", _half_mask((40, 32), "right"))
    return root


def make_shenzhen(root, stems=("CHNCXR_0001_0", "CHNCXR_0002_1")):
    for i, stem in enumerate(stems):
        _write(root / "images" / f"{stem}.png", _image(10 + i))
        _write(root / "masks" / f"{stem}_mask.png", _half_mask((40, 32), "left") | _half_mask((40, 32), "right"))
    return root


def make_generic(root, stems=("a", "b", "c")):
    for i, stem in enumerate(stems):
        _write(root / "images" / f"{stem}.png", _image(20 + i))
        _write(root / "masks" / f"{stem}.png", _half_mask((40, 32), "right"))
    return root


@pytest.mark.parametrize(
    "maker, layout, count",
    [(make_montgomery, "montgomery", 2), (make_shenzhen, "shenzhen", 2), (make_generic, "generic", 3)],
)
def test_each_layout(tmp_path, maker, layout, count):
    found = pairs.find_pairs(maker(tmp_path / "set"))
    assert len(found) == count
    assert {p.source_layout for p in found} == {layout}
    image_path, mask_paths, stem, source_layout = found[0]  # plain tuple unpacking works
    assert image_path.stem == stem and source_layout == layout
    assert len(mask_paths) == (2 if layout == "montgomery" else 1)
    image, mask = pairs.read_pair(found[0])
    assert image.shape == (40, 32, 1) and image.dtype == np.float32
    assert mask.shape == (40, 32) and mask.dtype == bool
    expected = 2 * 30 * 12 if layout in ("montgomery", "shenzhen") else 30 * 12
    assert mask.sum() == expected  # Montgomery: left and right merged


def test_nested_datasets_and_layout_filter(tmp_path):
    make_montgomery(tmp_path / "MontgomerySet")
    make_shenzhen(tmp_path / "shenzhen")
    make_generic(tmp_path / "other")
    found = pairs.find_pairs(tmp_path)
    assert [p.source_layout for p in found].count("montgomery") == 2
    assert len(found) == 7
    assert [p.stem for p in pairs.find_pairs(tmp_path, layout="generic")] == ["a", "b", "c"]


def test_unmatched_files_are_skipped_with_warning(tmp_path, caplog):
    root = make_generic(tmp_path / "set")
    _write(root / "images" / "lonely.png", _image(99))
    _write(root / "masks" / "orphan.png", _image(98))
    with caplog.at_level(logging.WARNING):
        found = pairs.find_pairs(root)
    assert [p.stem for p in found] == ["a", "b", "c"]
    assert "lonely" in caplog.text and "orphan" in caplog.text


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ManualMask/leftMask"):
        pairs.find_pairs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image/mask pairs"):
        pairs.find_pairs(tmp_path / "empty")
    with pytest.raises(ValueError, match="layout='jsrt'"):
        pairs.find_pairs(tmp_path, layout="jsrt")
    root = make_generic(tmp_path / "dup")
    _write(root / "images" / "a.jpg", _image(5))
    with pytest.raises(ValueError, match="a.jpg"):
        pairs.find_pairs(root)


def test_mask_size_mismatch_names_the_file(tmp_path):
    root = make_generic(tmp_path / "set", stems=("x",))
    _write(root / "masks" / "x.png", np.zeros((20, 20), np.uint8))
    (pair,) = pairs.find_pairs(root)
    with pytest.raises(ImageReadError, match=r"masks/x\.png"):
        pairs.read_pair(pair)


@pytest.mark.real_data
def test_real_folders(shared_data):
    v7 = pairs.find_pairs(shared_data / "lungs_v7_covid")
    assert len(v7) >= 300 and {p.source_layout for p in v7} == {"generic"}
    shenzhen = pairs.find_pairs(shared_data / "shenzhen_lungs")
    assert len(shenzhen) == 6 and {p.source_layout for p in shenzhen} == {"shenzhen"}
    image, mask = pairs.read_pair(shenzhen[0])
    assert image.shape[:2] == mask.shape and 0.1 < mask.mean() < 0.6


def test_load_pairs_skips_bad_pairs_and_checks_manifest(tmp_path, caplog):
    root = write_pairs(tmp_path / "pairs", count=3)
    cv2.imwrite(str(root / "masks" / "p1.png"), np.zeros((10, 10), np.uint8))  # wrong size
    with caplog.at_level(logging.WARNING):
        loaded = pairs.load_pairs(str(root))
    assert [p.name for p in loaded] == ["p0", "p2"]
    assert "p1.png" in caplog.text and "does not match" in caplog.text
    manifest = tmp_path / "pairs.csv"
    with open(manifest, "w", newline="") as handle:
        csv.writer(handle).writerows([["image", "mask"], ["a.png", "b.png"]])
    with pytest.raises(ValueError, match="image_path"):
        pairs.load_pairs(str(manifest))
    train, val = pairs.split_pairs(list(range(10)), 0.2, seed=0)
    assert len(val) == 2 and sorted(train + val) == list(range(10))


def test_load_pairs_from_tfds_registers_tfcxr_builders_first(monkeypatch):
    import tensorflow_datasets as tfds

    seen = []

    def fake_builder(name):
        seen.append((name, "tfcxr.datasets" in sys.modules))
        raise tfds.core.registered.DatasetNotFoundError(name)

    monkeypatch.delitem(sys.modules, "tfcxr.datasets", raising=False)
    monkeypatch.setattr(tfds, "builder", fake_builder)
    with pytest.raises(ValueError, match="neither an existing path nor a TFDS dataset"):
        pairs.load_pairs("cxr_lung_masks_missing")
    assert seen == [("cxr_lung_masks_missing", True)]
