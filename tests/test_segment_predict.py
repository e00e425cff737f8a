"""Tests for tfcxr.segment.predict (mask generation) with the tiny model."""

import argparse

import cv2
import numpy as np
import pytest

from tfcxr.segment import predict, qc


@pytest.fixture(scope="module")
def tiny():
    from tfcxr.segment import load_segmenter

    return load_segmenter("tiny")


def write_images(folder):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a.png"), (rng.random((80, 70)) * 255).astype(np.uint8))
    cv2.imwrite(str(folder / "b.jpg"), (rng.random((60, 66)) * 255).astype(np.uint8))
    cv2.imwrite(str(folder / "deep.png"), (rng.random((64, 64)) * 65535).astype(np.uint16))  # 16-bit PNG
    cv2.imwrite(str(folder / "blank.png"), np.full((50, 50), 7, np.uint8))
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return folder


def test_parse_shard():
    assert predict.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(argparse.ArgumentTypeError, match="shard"):
            predict.parse_shard(bad)


def test_generate_masks_flags_bad_images_and_resumes(tiny, tmp_path):
    images = write_images(tmp_path / "images")
    out = tmp_path / "masks"
    counts = predict.generate_masks(tiny, str(images), out, batch_size=2)
    assert counts == {"total": 5, "skipped": 0, "written": 4, "flagged": counts["flagged"], "read_error": 1,
                      "not_cxr": 0}  # the tiny model has no CXR gate
    for stem, shape in (("a", (80, 70)), ("b", (60, 66)), ("deep", (64, 64)), ("blank", (50, 50))):
        mask = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    table = qc.read_qc(out).set_index("stem")
    assert table.loc["corrupt", "flags"] == "read_error" and "corrupt.png" not in table.loc["corrupt", "error"]
    assert "IEND" in table.loc["corrupt", "error"] or table.loc["corrupt", "error"]
    assert table.loc["blank", "flags"].startswith("blank_image")
    assert 0.0 <= float(table.loc["a", "stability"]) <= 1.0 and table.loc["a", "cxr_score"] == ""
    assert (out / "overlay_grid.png").is_file() and not list(out.glob("*.tmp"))

    (out / "a.png").unlink()  # a mask lost mid-run: only it is redone
    again = predict.generate_masks(tiny, str(images), out, batch_size=2)
    assert (again["skipped"], again["written"]) == (3, 1)
    assert len(qc.read_qc(out)) == 5  # rows de-duplicated by stem


def test_sharded_cli_writes_and_merges_per_shard_qc(tmp_path):
    images = write_images(tmp_path / "images")
    out = tmp_path / "masks"
    for shard in ("0/2", "1/2"):
        assert predict.main(["--images", str(images), "--out", str(out), "--model", "tiny", "--prompt", "prior",
                             "--shard", shard]) == 0
    assert sorted(p.name for p in out.glob("qc*.csv")) == ["qc-00000-of-00002.csv", "qc-00001-of-00002.csv"]
    assert sorted(qc.read_qc(out)["stem"]) == ["a", "b", "blank", "corrupt", "deep"]
    assert (out / "overlay_grid-00001-of-00002.png").is_file()
