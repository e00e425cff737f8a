"""The torch-free reader of PyTorch ``.pth`` checkpoints: ``read_torch_state_dict`` and its zip and size limits.

``read_torch_state_dict`` reads the zip checkpoint written by ``torch.save`` as untrusted input. It never
imports torch, never runs code from the file, and reports every problem as a ``WeightsError`` whose message
starts with the file path. Before anything is unpickled or allocated it checks:

- the zip: at most ``MAX_CENTRAL_DIRECTORY_BYTES`` of central directory, ``MAX_ZIP_MEMBERS`` members, no
  duplicate names, only stored/deflated unencrypted members, each declaring at most ``MAX_MEMBER_BYTES``
  and ``MAX_TOTAL_MEMBER_BYTES`` together; members are read through a bounded stream and must hold exactly
  the size their directory entry declares (so a zip bomb or a lying directory fails fast, in low memory);
- ``data.pkl``: at most ``MAX_PICKLE_BYTES``, then checked and unpickled by ``tfcxr.segment.torch_pickle``
  (allowed opcodes, globals, persistent ids and tensor views, and the limits on tensors);
- the state dict: at most ``MAX_TOTAL_TENSOR_BYTES`` in the returned arrays.

Only then are storages read (one at a time) and every tensor copied into a fresh C-contiguous array.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pathlib
import pickle
import struct
import zipfile
import zlib

import numpy as np

from .torch_pickle import Refused, RestrictedUnpickler, check_pickle, short_repr, unwrap_state_dict
from .weights import WeightsError

# Limits of the .pth reader (the unpickler's own are in tfcxr.segment.torch_pickle). The LiteMedSAM checkpoint
# is 39 MB (437 members, 29 kB central directory, 80 kB data.pkl, 435 tensors); SAM ViT-H is 2.5 GB. Module
# constants, so a caller can raise them.
MAX_ZIP_MEMBERS = 100_000
MAX_CENTRAL_DIRECTORY_BYTES = 16 * 2**20  # ~100k members need ~7 MB
MAX_MEMBER_BYTES = 4 * 2**30  # one storage (torch may save many tensors as views of one storage)
MAX_TOTAL_MEMBER_BYTES = 8 * 2**30  # all members, as declared by the zip directory
MAX_PICKLE_BYTES = 16 * 2**20
MAX_TOTAL_TENSOR_BYTES = 8 * 2**30  # the returned state dict (a view with stride 0 may exceed its storage)

# What a hostile file can make zipfile, zlib, pickle or numpy raise; re-raised as WeightsError.
_READ_ERRORS = (pickle.UnpicklingError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error,
                EOFError, OSError, UnicodeDecodeError, ValueError, TypeError, IndexError, KeyError,
                AttributeError, NotImplementedError, RecursionError, RuntimeError, OverflowError, MemoryError)


class _CappedReads:
    """File wrapper refusing reads over ``cap`` bytes (while zipfile parses the central directory)."""

    def __init__(self, file, cap):
        self._file, self.cap, self._size = file, cap, os.fstat(file.fileno()).st_size

    def read(self, n=-1):
        if self.cap is not None:
            wanted = self._size - self._file.tell() if n is None or n < 0 else n
            if wanted > self.cap:
                raise Refused(f"zip central directory is over MAX_CENTRAL_DIRECTORY_BYTES={self.cap} bytes")
        return self._file.read(n)

    def __getattr__(self, name):
        return getattr(self._file, name)


def _check_members(archive: zipfile.ZipFile) -> dict:
    """``{name: ZipInfo}`` of the archive after checking counts, names, compression and declared sizes."""
    infos = archive.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise Refused(f"{len(infos)} zip members, more than MAX_ZIP_MEMBERS={MAX_ZIP_MEMBERS}")
    members = {info.filename: info for info in infos}
    if len(members) != len(infos):
        names = [info.filename for info in infos]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise Refused(f"duplicate zip member names {short_repr(duplicates)}")
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise Refused(f"zip member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise Refused(f"zip member {info.filename!r} uses compression method {info.compress_type} "
                          "(only stored or deflated are read)")
        if info.file_size > MAX_MEMBER_BYTES:
            raise Refused(f"zip member {info.filename!r} declares {info.file_size} bytes, "
                          f"more than MAX_MEMBER_BYTES={MAX_MEMBER_BYTES}")
        total += info.file_size
    if total > MAX_TOTAL_MEMBER_BYTES:
        raise Refused(f"zip members declare {total} bytes, more than MAX_TOTAL_MEMBER_BYTES={MAX_TOTAL_MEMBER_BYTES}")
    return members


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, limit_name: str) -> bytes:
    """The bytes of ``info``, read through a bounded stream: at most ``limit`` and exactly as declared."""
    if info.file_size > limit:
        raise Refused(f"zip member {info.filename!r} declares {info.file_size} bytes, "
                      f"more than {limit_name}={limit}")
    with archive.open(info) as stream:
        data = stream.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise Refused(f"zip member {info.filename!r} holds {'more' if len(data) > info.file_size else len(data)} "
                      f"bytes, its directory entry declares {info.file_size}")
    return data


def _read_storage(file, archive: zipfile.ZipFile, storage) -> np.ndarray:
    """The ``(storage.numel,)`` values of ``storage`` (a storage record of ``torch_pickle``) in a freshly
    allocated, writable array.

    A stored member (what torch writes) is read straight from ``file`` into the array after checking its
    local header and that its bytes lie inside the file; the CRC is checked as zipfile would.
    """
    info, dtype = storage.member, storage.storage_type.dtype
    if info.compress_type != zipfile.ZIP_STORED:
        raw = _read_member(archive, info, MAX_MEMBER_BYTES, "MAX_MEMBER_BYTES")
        values = np.frombuffer(bytearray(raw), dtype=dtype)
    else:
        file.seek(info.header_offset)
        header = file.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise Refused(f"zip member {info.filename!r}: bad local header at byte {info.header_offset}")
        name_len, extra_len = struct.unpack("<2H", header[26:30])
        name = file.read(name_len).decode("utf-8" if info.flag_bits & 0x800 else "cp437")
        start = info.header_offset + 30 + name_len + extra_len
        if name != info.orig_filename:
            raise Refused(f"zip member {info.filename!r}: local header names {short_repr(name)}")
        if info.compress_size != info.file_size or start + info.file_size > os.fstat(file.fileno()).st_size:
            raise Refused(f"zip member {info.filename!r}: its {info.file_size} bytes are not in the file")
        values = np.empty(storage.numel, dtype)
        file.seek(start)
        if file.readinto(values.view(np.uint8)) != info.file_size or zlib.crc32(values) != info.CRC:
            raise Refused(f"zip member {info.filename!r}: bad CRC-32 or short read")
    if storage.storage_type.name == "BoolStorage" and values.size and values.view(np.uint8).max() > 1:
        raise Refused(f"{storage!r} holds bytes other than 0 and 1")
    return values


def _materialize(ref, values: np.ndarray, owned: bool) -> np.ndarray:
    """A fresh C-contiguous ``ref.size`` array of the view ``ref`` (a checked tensor record of ``torch_pickle``)
    into the 1-D storage ``values``.

    ``owned``: no other tensor uses ``values``, so a view covering all of it is returned without a copy.
    """
    size, stride, offset = ref.size, ref.stride, ref.offset
    if ref.numel == 0:
        return np.empty(size, values.dtype)
    contiguous = tuple(math.prod(size[i + 1:]) for i in range(len(size)))
    if all(n == 1 or s == c for n, s, c in zip(size, stride, contiguous)):
        if owned and offset == 0 and ref.numel == values.size:
            return values.reshape(size)
        return values[offset:offset + ref.numel].reshape(size).copy()  # numpy checks the bounds
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= values.size:  # checked by _rebuild_tensor_v2 already; as_strided does not check
        raise Refused(f"tensor view reads element {last} of {ref.storage!r}")
    itemsize = values.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(values[offset:last + 1], shape=size, writeable=False,
                                           strides=tuple(s * itemsize if n > 1 else 0 for n, s in zip(size, stride)))
    return np.array(view, order="C")


def _read_state_dict(path: pathlib.Path) -> "collections.OrderedDict[str, np.ndarray]":
    """``read_torch_state_dict`` without the path prefix: a failed check raises ``Refused``."""
    try:
        file = open(path, "rb")
    except OSError as err:
        raise Refused(f"cannot open the checkpoint ({err})") from err
    with file:
        capped = _CappedReads(file, MAX_CENTRAL_DIRECTORY_BYTES)
        try:
            archive = zipfile.ZipFile(capped)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, struct.error, EOFError, OSError, ValueError) as err:
            raise Refused(f"not a PyTorch zip checkpoint ({err})") from err
        capped.cap = None
        with archive:
            members = _check_members(archive)
            pkls = [n for n in members if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkls) != 1:
                raise Refused(f"expected one data.pkl in the archive, found {short_repr(pkls)}")
            prefix = pkls[0].rsplit("/", 1)[0] if "/" in pkls[0] else ""
            byteorder = members.get(f"{prefix}/byteorder" if prefix else "byteorder")
            if byteorder is not None:
                order = _read_member(archive, byteorder, 16, "the byteorder limit").strip()
                if order != b"little":
                    raise Refused(f"byteorder {short_repr(order)} is not supported (only little-endian checkpoints)")
            data = _read_member(archive, members[pkls[0]], MAX_PICKLE_BYTES, "MAX_PICKLE_BYTES")
            check_pickle(data)
            state = unwrap_state_dict(RestrictedUnpickler(io.BytesIO(data), members, prefix).load())
            total = sum(ref.numel * ref.storage.storage_type.dtype.itemsize for ref in state.values())
            if total > MAX_TOTAL_TENSOR_BYTES:
                raise Refused(f"tensors hold {total} bytes, more than MAX_TOTAL_TENSOR_BYTES={MAX_TOTAL_TENSOR_BYTES}")
            by_storage = collections.defaultdict(list)
            for key, ref in state.items():
                by_storage[id(ref.storage)].append(key)
            arrays = {}
            for keys in by_storage.values():  # one storage in memory at a time
                values = _read_storage(file, archive, state[keys[0]].storage)
                for key in keys:
                    arrays[key] = _materialize(state[key], values, owned=len(keys) == 1)
                del values
    return collections.OrderedDict((key, arrays[key]) for key in state)


def read_torch_state_dict(path) -> "collections.OrderedDict[str, np.ndarray]":
    """Read a PyTorch zip checkpoint (``torch.save`` format) into ``{key: np.ndarray}`` without torch.

    A checkpoint holding ``{"model": state_dict}`` or ``{"state_dict": state_dict}`` is unwrapped. Each array
    is a fresh C-contiguous copy of the tensor's shape. The file is untrusted input: see the docstrings of this
    module and of ``tfcxr.segment.torch_pickle`` for the checks. Raises ``WeightsError`` (message starting with ``path``) for any problem with the file.
    """
    path = pathlib.Path(path)
    try:
        return _read_state_dict(path)
    except Refused as err:
        raise WeightsError(f"{path}: {err}") from err
    except _READ_ERRORS as err:
        message = str(err) if len(str(err)) <= 300 else str(err)[:300] + "..."
        raise WeightsError(f"{path}: cannot read checkpoint ({type(err).__name__}: {message})") from err
