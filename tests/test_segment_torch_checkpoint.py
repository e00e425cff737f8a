"""Tests of ``tfcxr.segment.torch_checkpoint.read_torch_state_dict``, the torch-free ``.pth`` reader: valid files
read back exactly, and hostile zips (bombs, lying directories, limits) and random mutations raise ``WeightsError``.

Checkpoints are written without torch by ``torch_checkpoint_helpers``.
"""

import collections
import random
import struct
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from torch_checkpoint_helpers import (PREFIX, STORAGE_TYPES, Storage, Tensor, arange_storage, dumps,
                                      fake_torch_modules, one_tensor, refused, state_dict, valid_state,
                                      write_checkpoint, write_zip)

from tfcxr.segment import torch_checkpoint as C
from tfcxr.segment.weights import WeightsError

FUZZ_SEED = 20240611
FUZZ_CASES = 250  # per fuzz target (zip bytes, data.pkl bytes)


@pytest.fixture
def fake_torch(monkeypatch):
    """Fake ``torch`` modules while the test runs (``torch_checkpoint_helpers.fake_torch_modules``)."""
    yield from fake_torch_modules(monkeypatch)


@pytest.fixture
def valid(fake_torch, tmp_path):
    """Path of a valid checkpoint and the arrays it holds."""
    state, expected = valid_state()
    return write_checkpoint(tmp_path / "valid.pth", state), expected


# ---------------------------------------------------------------------------------------------- valid files


def test_valid_checkpoint_reads_back(valid):
    path, expected = valid
    got = C.read_torch_state_dict(path)
    assert isinstance(got, collections.OrderedDict) and list(got) == list(expected)
    for key, want in expected.items():
        assert type(got[key]) is np.ndarray and got[key].dtype == want.dtype.newbyteorder("<"), key
        assert got[key].shape == want.shape and got[key].flags.c_contiguous and got[key].flags.writeable, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)
    arrays = list(got.values())
    assert not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:])
    got["shared.full"][:] = 0  # a fresh copy: the tensor sharing its storage is unchanged
    np.testing.assert_array_equal(got["shared.tail"], [-2.0, 4.0])


def test_valid_variants_wrapped_plain_dict_deflated_no_byteorder(fake_torch, tmp_path):
    state, expected = valid_state()
    for name, obj, kwargs in [("wrapped.pth", {"model": state, "epoch": 3}, {}),
                              ("state_dict.pth", {"state_dict": dict(state)}, {}),
                              ("deflated.pth", state, {"compression": zipfile.ZIP_DEFLATED}),
                              ("no_byteorder.pth", state, {"byteorder": None})]:
        got = C.read_torch_state_dict(write_checkpoint(tmp_path / name, obj, **kwargs))
        assert list(got) == list(expected), name
        for key, want in expected.items():
            np.testing.assert_array_equal(got[key], want, err_msg=f"{name}: {key}")


def test_bool_storage_bytes_must_be_0_or_1(fake_torch, tmp_path):
    storage = Storage("0", np.array([True, False]), kind="BoolStorage", raw=b"\x01\x02")
    refused(one_tensor(tmp_path, Tensor(storage)), "bytes other than 0 and 1")


def test_total_tensor_bytes(fake_torch, tmp_path, monkeypatch):
    monkeypatch.setattr(C, "MAX_TOTAL_TENSOR_BYTES", 10_000)
    path = one_tensor(tmp_path, Tensor(arange_storage(1), size=(100, 100), stride=(0, 0)))  # 40 kB from 4 bytes
    refused(path, "tensors hold 40000 bytes, more than MAX_TOTAL_TENSOR_BYTES=10000")


# ------------------------------------------------------------------------------------------------ the zip


def _central_directory_entry(data: bytes, name: str) -> int:
    """Byte offset of ``name``'s central directory entry in the zip ``data``."""
    pos = data.index(b"PK\x01\x02")
    while True:
        name_len, extra_len, comment_len = struct.unpack("<3H", data[pos + 28:pos + 34])
        if data[pos + 46:pos + 46 + name_len] == name.encode():
            return pos
        pos += 46 + name_len + extra_len + comment_len


def patch_central_directory(path, name, file_size=None, flag_bits=None):
    """Rewrite the directory entry of ``name`` in the zip at ``path`` to lie about its size or flags."""
    data = bytearray(path.read_bytes())
    pos = _central_directory_entry(bytes(data), name)
    if file_size is not None:
        data[pos + 24:pos + 28] = struct.pack("<I", file_size)
    if flag_bits is not None:
        data[pos + 8:pos + 10] = struct.pack("<H", flag_bits)
    path.write_bytes(bytes(data))
    return path


def test_not_a_zip_and_truncated_zips(valid, tmp_path):
    path, _ = valid
    data = path.read_bytes()
    (tmp_path / "garbage.pth").write_bytes(b"garbage")
    refused(tmp_path / "garbage.pth", "not a PyTorch zip checkpoint")
    refused(tmp_path / "missing.pth", "cannot open the checkpoint")
    for cut in sorted({0, 1, 4, 22, 30, 100, len(data) // 3, len(data) // 2, len(data) - 200, len(data) - 23,
                       len(data) - 22, len(data) - 1}):
        (tmp_path / "cut.pth").write_bytes(data[:cut])
        refused(tmp_path / "cut.pth")


def _zeros_member(archive, name, nbytes):
    with archive.open(name, "w") as member:
        chunk = bytes(2**20)
        for _ in range(nbytes // len(chunk)):
            member.write(chunk)


def test_zip_bomb_pickle_fails_fast_in_low_memory(tmp_path):
    """A deflated data.pkl of 64 MiB zeros (64 kB on disk), declared honestly or declared as 1 kB."""
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        _zeros_member(archive, f"{PREFIX}/data.pkl", 64 * 2**20)
    assert path.stat().st_size < 2**20
    for case, match in [("honest", "MAX_PICKLE_BYTES"), ("lying", "Bad CRC-32")]:
        if case == "lying":
            patch_central_directory(path, f"{PREFIX}/data.pkl", file_size=1024)
        start = time.perf_counter()
        tracemalloc.start()
        try:
            refused(path, match)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert time.perf_counter() - start < 2.0 and peak < 4 * 2**20, (case, peak)


def test_zip_bomb_storage_and_declared_sizes(fake_torch, tmp_path, monkeypatch):
    storage = Storage("0", np.zeros(2**20, np.float32), raw=None)  # 4 MiB, written below as a deflated bomb
    data, _ = dumps(state_dict(w=Tensor(storage)))
    path = tmp_path / "storage_bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{PREFIX}/data.pkl", data)
        _zeros_member(archive, f"{PREFIX}/data/0", 4 * 2**20)
    np.testing.assert_array_equal(C.read_torch_state_dict(path)["w"], storage.values)  # a valid deflated file
    monkeypatch.setattr(C, "MAX_MEMBER_BYTES", 2**20)
    refused(path, "'archive/data/0' declares 4194304 bytes, more than MAX_MEMBER_BYTES=1048576")
    monkeypatch.setattr(C, "MAX_MEMBER_BYTES", 8 * 2**20)
    monkeypatch.setattr(C, "MAX_TOTAL_MEMBER_BYTES", 2**20)
    refused(path, "more than MAX_TOTAL_MEMBER_BYTES=1048576")
    monkeypatch.setattr(C, "MAX_TOTAL_MEMBER_BYTES", 8 * 2**20)
    patch_central_directory(path, f"{PREFIX}/data/0", file_size=16)
    refused(path, "holds 16 bytes, but 1048576 values")  # the lying size no longer matches the numel


def test_declared_sizes_over_the_default_limits(valid):
    path, _ = valid
    patch_central_directory(path, f"{PREFIX}/data.pkl", file_size=2**32 - 2)
    refused(path, f"declares {2**32 - 2} bytes, more than MAX_PICKLE_BYTES")


def test_lying_stored_storage(valid):
    path, _ = valid
    patch_central_directory(path, f"{PREFIX}/data/0", file_size=2**31)  # 2 GiB, not in the file
    refused(path, "storage '0': member 'archive/data/0' holds 2147483648 bytes")


def test_stored_storage_not_in_the_file_is_not_allocated(fake_torch, tmp_path):
    """A stored member declaring 1 GiB (numel to match) that holds 16 bytes: refused before allocating."""
    storage = Storage("0", np.zeros(4, np.float32), pid=("storage", STORAGE_TYPES["FloatStorage"], "0", "cpu", 2**28))
    path = one_tensor(tmp_path, Tensor(storage, size=(2**28,), stride=(1,)))
    patch_central_directory(path, f"{PREFIX}/data/0", file_size=2**30)
    tracemalloc.start()
    try:
        refused(path, "'archive/data/0': its 1073741824 bytes are not in the file")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, peak


def test_member_limits(valid, tmp_path, monkeypatch):
    path, _ = valid
    monkeypatch.setattr(C, "MAX_ZIP_MEMBERS", 8)
    refused(path, "zip members, more than MAX_ZIP_MEMBERS=8")
    monkeypatch.setattr(C, "MAX_ZIP_MEMBERS", 100)
    monkeypatch.setattr(C, "MAX_CENTRAL_DIRECTORY_BYTES", 200)
    refused(path, "zip central directory is over MAX_CENTRAL_DIRECTORY_BYTES=200 bytes")


def test_zip_structure_checks(fake_torch, tmp_path):
    state, _ = valid_state()
    data, storages = dumps(state)
    refused(write_zip(tmp_path / "big.pth", data, storages.values(), byteorder=b"big"), "byteorder b'big'")
    refused(write_zip(tmp_path / "odd.pth", data, storages.values(), byteorder=b"middle"), "byteorder b'middle'")
    refused(write_zip(tmp_path / "two.pth", data, storages.values(), extra=[("other/data.pkl", data)]),
            "expected one data.pkl in the archive, found ['archive/data.pkl', 'other/data.pkl']")
    with zipfile.ZipFile(tmp_path / "none.pth", "w") as archive:
        archive.writestr("archive/version", b"3\n")
    refused(tmp_path / "none.pth", "expected one data.pkl in the archive, found []")
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = write_zip(tmp_path / "dup.pth", data, storages.values(), extra=[(f"{PREFIX}/data/0", b"\0" * 192)])
    refused(path, "duplicate zip member names ['archive/data/0']")
    path = patch_central_directory(write_zip(tmp_path / "enc.pth", data, storages.values()), f"{PREFIX}/data/0",
                                   flag_bits=0x1)
    refused(path, "'archive/data/0' is encrypted")
    if hasattr(zipfile, "ZIP_BZIP2"):
        try:
            path = write_zip(tmp_path / "bz2.pth", data, storages.values(), compression=zipfile.ZIP_BZIP2)
        except RuntimeError:  # Python built without bz2
            return
        refused(path, "uses compression method 12")


def test_big_pickle(valid, monkeypatch):
    path, _ = valid
    monkeypatch.setattr(C, "MAX_PICKLE_BYTES", 100)
    size = zipfile.ZipFile(path).getinfo(f"{PREFIX}/data.pkl").file_size
    refused(path, f"'archive/data.pkl' declares {size} bytes, more than MAX_PICKLE_BYTES=100")


# --------------------------------------------------------------------------------------------------- fuzz


def _mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random mutation of ``data``: byte flips, insertion, deletion, truncation or a duplicated span."""
    data = bytearray(data)
    kind = rng.choice(["flip", "flip", "set", "insert", "delete", "truncate", "duplicate"])
    pos = rng.randrange(len(data))
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "set":
        data[pos] = rng.choice([0, 1, 0x7F, 0x80, 0xFE, 0xFF])
    elif kind == "insert":
        data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == "delete":
        del data[pos:pos + rng.randint(1, 16)]
    elif kind == "truncate":
        del data[pos:]
    else:
        n = rng.randint(1, 32)
        data[pos:pos] = data[pos:pos + n]
    return bytes(data), f"{kind}@{pos}"


def fuzz(tmp_path, seed=FUZZ_SEED, cases=FUZZ_CASES):
    """Mutate the valid checkpoint's zip bytes and (re-zipped) its data.pkl ``cases`` times each.

    Returns ``{"loaded": n, "refused": n}``; fails on any exception other than WeightsError, or a load that
    returns anything but a dict of numpy arrays within ``MAX_TOTAL_TENSOR_BYTES``. Needs ``fake_torch``.
    """
    rng = random.Random(seed)
    state, _ = valid_state()
    data_pkl, storages = dumps(state)
    zip_bytes = write_zip(tmp_path / "fuzz_base.pth", data_pkl, storages.values()).read_bytes()
    counts = {"loaded": 0, "refused": 0}
    path = tmp_path / "fuzz.pth"
    for target in ("zip", "data.pkl"):
        for case in range(cases):
            if target == "zip":
                mutated, how = _mutate(zip_bytes, rng)
                path.write_bytes(mutated)
            else:
                mutated, how = _mutate(data_pkl, rng)
                write_zip(path, mutated, storages.values())
            try:
                got = C.read_torch_state_dict(path)
            except WeightsError as err:
                assert str(err).startswith(f"{path}: "), (target, case, how, err)
                counts["refused"] += 1
                continue
            except Exception as err:  # noqa: BLE001 - the point of the test
                pytest.fail(f"seed {seed}, {target} case {case} ({how}): {type(err).__name__}: {err}")
            assert all(type(k) is str and type(v) is np.ndarray for k, v in got.items()), (target, case, how)
            assert sum(v.nbytes for v in got.values()) <= C.MAX_TOTAL_TENSOR_BYTES, (target, case, how)
            counts["loaded"] += 1
    return counts


def test_fuzz_mutations_seed_20240611(fake_torch, tmp_path, monkeypatch):
    """Seed 20240611, 250 mutations of the zip bytes + 250 of data.pkl: each loads or raises WeightsError."""
    monkeypatch.setattr(C, "MAX_TOTAL_TENSOR_BYTES", 2**20)  # keep loads of mutated (e.g. expanded) views small
    start = time.perf_counter()
    counts = fuzz(tmp_path)
    assert counts["loaded"] > 0 and counts["refused"] > 0, counts
    assert time.perf_counter() - start < 30, counts
