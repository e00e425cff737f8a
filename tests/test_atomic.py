"""tfcxr.atomic: atomic writes whose files and staging folders get the umask's default mode, never 0600/0700."""

import numpy as np
import pytest

from permission_helpers import mode
from tfcxr import atomic


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_files_and_staging_dirs_follow_the_umask(umask, tmp_path, mask, file_mode, dir_mode):
    umask(mask)
    written = [
        atomic.write_bytes_atomic(tmp_path / "a.bin", b"\x00\x01"),
        atomic.write_text_atomic(tmp_path / "b.txt", "héllo\n"),
    ]
    with atomic.atomic_write(tmp_path / "c.csv", "w", newline="") as handle:
        handle.write("x,y\r\n")
    written.append(tmp_path / "c.csv")
    assert [mode(p) for p in written] == [file_mode] * 3
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "c.csv").read_bytes() == b"x,y\r\n"
    staging = atomic.make_staging_dir(tmp_path / "out" / "1")
    assert staging.parent == tmp_path / "out" and staging.name.startswith(".1.") and not list(staging.iterdir())
    assert mode(staging) == dir_mode and mode(tmp_path / "out") == dir_mode
    assert atomic.make_staging_dir(tmp_path / "out" / "1") != staging  # unique per call
    assert _leftovers(tmp_path) == []


def test_failure_leaves_no_temp_file_and_no_target(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_write(target) as handle:
            handle.write(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_target_is_replaced_atomically(tmp_path):
    target = atomic.write_text_atomic(tmp_path / "config.json", "old")
    with open(target, encoding="utf-8") as reader:  # a reader holding the old file keeps seeing it whole
        with pytest.raises(KeyboardInterrupt):
            with atomic.atomic_write(target, "w") as handle:
                handle.write("half")
                raise KeyboardInterrupt
        assert target.read_text() == "old"  # a failed rewrite keeps the old file
        atomic.write_text_atomic(target, "new", fsync=True)
        assert reader.read() == "old"
    assert target.read_text() == "new" and _leftovers(tmp_path) == []


def test_bad_mode_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="mode='a'.*x.txt"):
        with atomic.atomic_write(tmp_path / "x.txt", "a"):
            pass
    with pytest.raises(ValueError, match="x.bin.*text mode"):
        with atomic.atomic_write(tmp_path / "x.bin", "wb", encoding="utf-8"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_mask_png_qc_csv_and_overlay_grid_are_0644_under_umask_022(umask, tmp_path):
    """What `python -m tfcxr.segment.predict` writes: mask PNGs (they were 0600 via mkstemp), the QC CSV, the grid."""
    from tfcxr.data.io import read_mask, write_png_atomic
    from tfcxr.segment import qc

    umask(0o022)
    mask = np.zeros((20, 24), np.uint8)
    mask[4:16, 3:10] = 255
    png = tmp_path / "masks" / "a.png"
    write_png_atomic(png, mask)
    write_png_atomic(png, mask)  # rewriting keeps the mode
    with qc.QCWriter(tmp_path / "masks" / qc.qc_filename()) as writer:
        writer.write([{"stem": "a", "mask_path": str(png), **qc.mask_stats(mask > 0)}])
    grid = qc.write_overlay_grid(tmp_path / "masks" / "overlay_grid.png", [qc.overlay(mask / 255.0, mask > 0, 32)])
    assert {p.name: mode(p) for p in (png, tmp_path / "masks" / "qc.csv", grid)} == {
        "a.png": 0o644, "qc.csv": 0o644, "overlay_grid.png": 0o644,
    }
    assert mode(tmp_path / "masks") == 0o755 and _leftovers(tmp_path / "masks") == []
    assert (read_mask(png) == (mask > 0)).all() and len(qc.read_qc(tmp_path / "masks")) == 1


def test_finetune_embedding_cache_is_atomic_and_shareable(umask, tmp_path):
    """`tfcxr.segment.embedding_cache.cached_embeddings` writes each .npy atomically (no `.tmp` left), mode 0o644."""
    from types import SimpleNamespace

    from tfcxr.segment.embedding_cache import cached_embeddings

    class _Weight:
        def numpy(self):
            return np.ones(3, np.float32)

    calls = []
    model = SimpleNamespace(image_encoder=SimpleNamespace(weights=[_Weight()]),
                            embed=lambda x: calls.append(len(x)) or np.asarray(x)[:, :1] * 2.0)
    umask(0o022)
    pixels = np.random.default_rng(0).random((3, 4, 4, 3)).astype(np.float32)
    first = cached_embeddings(model, pixels, cache_dir=tmp_path / "cache", batch_size=2)
    again = cached_embeddings(model, pixels, cache_dir=tmp_path / "cache", batch_size=2)
    np.testing.assert_array_equal(first, again)
    assert calls == [2, 1]  # the second call reads the cache
    files = sorted((tmp_path / "cache").rglob("*"))
    assert [p.suffix for p in files if p.is_file()] == [".npy"] * 3
    assert {mode(p) for p in files} == {0o644, 0o755} and not [p for p in files if p.name.startswith(".")]
