"""Tests for tfcxr.segment.qc: per-mask statistics and flags, QC CSVs (write, repair, merge) and overlay grids."""

import cv2
import numpy as np
import pytest

from mask_fakes import two_lungs
from tfcxr.segment import qc


def test_mask_stats_flags():
    two = np.zeros((100, 100), bool)
    two[20:80, 10:40] = True
    two[20:80, 60:90] = True
    stats = qc.mask_stats(two, image=np.random.default_rng(0).random((100, 100, 1), dtype=np.float32))
    assert stats["components"] == 2 and stats["flags"] == ""
    assert stats["balance"] == pytest.approx(1.0)
    one = np.zeros((100, 100), bool)
    one[20:80, 10:40] = True
    assert set(qc.mask_stats(one)["flags"].split(";")) == {"component_count", "imbalance"}
    assert qc.mask_stats(np.zeros((10, 10), bool), image=np.zeros((10, 10, 1)))["flags"] == "blank_image;no_lungs"


def test_overlay_outlines_the_reference_in_red():
    image = np.full((100, 80, 1), 0.5, np.float32)
    mask = np.zeros((100, 80), bool)
    mask[20:60, 10:30] = True
    reference = np.zeros((100, 80), bool)
    reference[30:90, 40:70] = True

    def red(tile):
        return (tile[..., 2] == 255) & (tile[..., 1] == 0) & (tile[..., 0] == 0)

    plain = qc.overlay(image, mask, size=100)
    outlined = qc.overlay(image, mask, size=100, reference=reference)
    assert plain.shape == outlined.shape == (100, 100, 3) and not red(plain).any()
    ys, xs = np.nonzero(red(outlined))
    assert ys.size > 50 and xs.min() >= 35 and ys.min() >= 25  # red only around the reference, right of the mask


def test_qc_flags_unstable_masks():
    lungs = two_lungs()
    assert "unstable" in qc.mask_stats(lungs, stability=qc.MIN_STABILITY - 0.01)["flags"]
    stats = qc.mask_stats(lungs, stability=0.99)
    assert "unstable" not in stats["flags"] and stats["stability"] == 0.99


def test_is_blank_ignores_a_few_outlier_pixels():
    assert qc.is_blank(np.full((40, 40, 1), 0.3, np.float32))
    flat = np.full((40, 40), 0.5, np.float32) + np.random.default_rng(0).uniform(0, 0.01, (40, 40)).astype(np.float32)
    flat[0, :5] = 1.0  # 5 of 1,600 pixels: under the 1st-99th percentile range
    assert qc.is_blank(flat)
    assert not qc.is_blank(np.linspace(0, 1, 1600, dtype=np.float32).reshape(40, 40, 1))


def test_mask_stats_not_cxr_area_outlier_and_no_lungs():
    lungs = two_lungs()
    below = qc.mask_stats(lungs, cxr_score=0.123456, cxr_threshold=0.5)
    assert below["flags"] == "not_cxr" and below["cxr_score"] == 0.1235
    assert qc.mask_stats(lungs, cxr_score=0.5, cxr_threshold=0.5)["flags"] == ""  # at the threshold: kept
    assert qc.mask_stats(lungs, cxr_score=0.1)["flags"] == ""  # no threshold: no flag
    assert qc.mask_stats(lungs)["cxr_score"] == "" and qc.mask_stats(lungs)["stability"] == ""
    big = np.ones((100, 100), bool)
    big[:, 48:52] = False  # two lungs covering 96% of the image
    stats = qc.mask_stats(big)
    assert stats["components"] == 2 and stats["flags"] == "area_outlier"
    assert stats["left_fraction"] == stats["right_fraction"] == pytest.approx(0.48)
    speck = np.zeros((100, 100), bool)
    speck[50, 50] = True  # below MIN_AREA_FRACTION: no_lungs only, not component_count / imbalance / unstable
    assert qc.mask_stats(speck, stability=0.1)["flags"] == "no_lungs"
    assert set(qc.mask_stats(lungs, stability=0.1)["flags"].split(";")) <= set(qc.QC_FLAGS)


def test_qc_filename():
    assert qc.qc_filename() == "qc.csv"
    assert qc.qc_filename((2, 4)) == "qc-00002-of-00004.csv"


def test_qc_writer_repairs_a_cut_line_and_writes_the_header_once(tmp_path):
    path = tmp_path / "masks" / "qc.csv"
    with qc.QCWriter(path) as writer:
        writer.write([{"stem": "a", "flags": "no_lungs"}])
    path.write_bytes(path.read_bytes() + b"b,/img/b.png,/m/b")  # a run killed mid-row
    with qc.QCWriter(path) as writer:
        writer.write([{"stem": "b", "flags": ""}, {"stem": "a", "flags": "", "error": "retry"}])
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(qc.QC_COLUMNS) and lines.count(lines[0]) == 1 and len(lines) == 4
    table = qc.read_qc(path.parent)
    assert list(table["stem"]) == ["a", "b"] and list(table.columns) == list(qc.QC_COLUMNS)
    assert (table.loc[0, "error"], table.loc[0, "flags"]) == ("retry", "")  # the later row of a stem wins


def test_read_qc_merges_shards_and_is_empty_without_files(tmp_path):
    empty = qc.read_qc(tmp_path)
    assert len(empty) == 0 and list(empty.columns) == list(qc.QC_COLUMNS)
    for shard, stems in (((0, 2), ["c", "a"]), ((1, 2), ["b"])):
        with qc.QCWriter(tmp_path / qc.qc_filename(shard)) as writer:
            writer.write([{"stem": stem, "flags": "imbalance"} for stem in stems])
    (tmp_path / "qc-notes.csv").write_text("stem\nzzz\n")  # not a QC shard name: ignored
    table = qc.read_qc(tmp_path)
    assert list(table["stem"]) == ["a", "b", "c"] and set(table["flags"]) == {"imbalance"}


def test_overlay_tints_the_mask_and_letterboxes():
    image = np.zeros((100, 50, 1), np.float32)
    mask = np.zeros((100, 50), bool)
    mask[30:70, 10:40] = True
    tile = qc.overlay(image, mask, size=64)
    assert tile.shape == (64, 64, 3) and tile.dtype == np.uint8
    assert not tile[:, 33:].any()  # 100 x 50 scaled to 64 x 32: the right half is padding
    b, g, r = tile[32, 16]
    assert g > 80 and b == r == 0  # inside the mask: tinted green


def test_overlay_grid_layout_and_captions(tmp_path):
    tiles = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(5)]
    path = qc.write_overlay_grid(tmp_path / "out" / "grid.png", tiles, columns=2)
    grid = cv2.imread(str(path))
    assert path == tmp_path / "out" / "grid.png" and grid.shape == (96, 64, 3)
    np.testing.assert_array_equal(grid[32:64, 32:64], tiles[3])  # row 1, column 1
    assert not grid[64:, 32:].any()  # the empty sixth cell
    captioned = cv2.imread(str(qc.write_overlay_grid(tmp_path / "c.png", tiles[:1], ["a_stem"])))
    assert captioned.shape == (32, 32, 3) and (captioned[..., 2] > captioned[..., 0]).any()  # red text drawn
    assert tiles[0].max() == 0  # the caller's tiles are not drawn on
    blank = cv2.imread(str(qc.write_overlay_grid(tmp_path / "none.png", [])))
    assert blank.shape == (192, 192, 3) and not blank.any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "none.png", "out"]  # no temporary file left
