"""The restricted unpickler of a PyTorch checkpoint's ``data.pkl``: what it may contain and what it becomes.

``tfcxr.segment.torch_checkpoint.read_torch_state_dict`` hands the ``data.pkl`` bytes here after the zip checks.
Nothing from the file runs: the bytes are first checked opcode by opcode (``check_pickle``), then unpickled by
``RestrictedUnpickler`` into inert records, and no storage bytes are read here. The checks:

- opcodes: only those a checkpoint needs (no ``INST``/``OBJ``/``NEWOBJ``/``EXT``/out-of-band buffers), memo
  indices in sequence (a huge ``LONG_BINPUT`` index would make the C unpickler allocate a huge memo table), no
  stack underflow, and tuples nested at most ``MAX_PICKLE_NESTING`` deep (hashing a deeper one recurses in C and
  can crash the interpreter);
- globals: only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage``
  types, each resolved to an inert stand-in that refuses ``BUILD`` (so the pickle cannot set attributes on
  it); ``BUILD`` on a state dict accepts only torch's ``{"_metadata": ...}`` state, which is dropped;
- persistent ids: exactly ``('storage', <storage type>, key, location, numel)`` with ``key`` a plain name
  of an existing ``<prefix>/data/<key>`` member holding exactly ``numel * itemsize`` bytes, and a key always
  declared with the same type and numel;
- tensors: ``_rebuild_tensor_v2`` accepts only a storage from a persistent id, a non-negative int offset,
  equal-length tuples of non-negative ints (no bools) for size and stride, a bool ``requires_grad`` and no
  backward hooks or metadata; the highest element ``offset + sum((size_i - 1) * stride_i)`` must lie inside
  the storage, and at most ``MAX_TENSORS`` tensors of ``MAX_TENSOR_ELEMENTS`` elements each.

Every failed check raises ``Refused``, which the reader turns into a ``WeightsError`` naming the file.
"""

from __future__ import annotations

import collections
import math
import pickle
import pickletools
import re
import reprlib

import numpy as np

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

# Limits of the unpickler (module constants, so a caller can raise them; the zip and size limits are in
# tfcxr.segment.torch_checkpoint). The LiteMedSAM checkpoint holds 435 tensors.
MAX_PICKLE_NESTING = 100  # tuples in tuples; torch writes 3 levels
MAX_TENSORS = 200_000  # _rebuild_tensor_v2 calls per checkpoint
MAX_TENSOR_DIMS = 32
MAX_TENSOR_ELEMENTS = 2**31  # per tensor

# The pickle opcodes torch.save (protocol 2; later protocols for forward compatibility) can emit for a state
# dict, with their stack effect for check_pickle: (items popped, or "mark": down to the last MARK; what is
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


class Refused(Exception):
    """A check of the .pth reader failed; ``torch_checkpoint.read_torch_state_dict`` re-raises it as a
    ``WeightsError`` prefixed with the file path."""


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxtuple, _REPR.maxlong = 60, 60, 8, 40


def short_repr(value) -> str:
    """Short repr of a value taken from the file, for error messages (never raises)."""
    try:
        return _REPR.repr(value)
    except Exception:  # e.g. an int beyond the int->str digit limit
        return f"<{type(value).__name__}>"


class _Inert:
    """Base of the stand-ins the unpickler hands out: no attributes can be set on them by ``BUILD``."""

    __slots__ = ()

    def __setstate__(self, state):
        raise Refused(f"data.pkl sets state {short_repr(state)} on {self!r} (pickle BUILD), which is refused")


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

    Its bytes are read only after the whole pickle has been checked (by ``tfcxr.segment.torch_checkpoint``).
    """

    __slots__ = ("key", "storage_type", "numel", "member")

    def __init__(self, key, storage_type, numel, member):
        self.key, self.storage_type, self.numel, self.member = key, storage_type, numel, member

    def __repr__(self):
        return f"storage {self.key!r} ({self.storage_type!r}, {self.numel} values)"


class _TensorRef(_Inert):
    """A checked tensor view ``(storage, offset, size, stride)``; materialized by ``torch_checkpoint``."""

    __slots__ = ("storage", "offset", "size", "stride", "numel")

    def __init__(self, storage, offset, size, stride, numel):
        self.storage, self.offset, self.size, self.stride, self.numel = storage, offset, size, stride, numel

    def __repr__(self):
        return f"tensor{self.size} of {self.storage!r}"


def _int_tuple(value, what):
    if type(value) is not tuple or len(value) > MAX_TENSOR_DIMS or any(
            type(v) is not int or v < 0 for v in value):
        raise Refused(f"tensor {what} must be a tuple of at most {MAX_TENSOR_DIMS} non-negative ints, "
                      f"got {short_repr(value)}")
    return value


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None) -> _TensorRef:
    """Check torch's tensor record against its storage and return a ``_TensorRef`` (no data is touched).

    ``size`` and ``stride`` are ``(ndim,)`` tuples of element counts; the view reads elements
    ``storage_offset + sum(i_k * stride_k)`` for ``0 <= i_k < size_k``, which must all lie in the storage.
    """
    if type(storage) is not _Storage:
        raise Refused(f"tensor storage must come from a persistent id, got {short_repr(storage)}")
    if type(storage_offset) is not int or storage_offset < 0:
        raise Refused(f"tensor storage_offset must be a non-negative int, got {short_repr(storage_offset)}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise Refused(f"tensor size {short_repr(size)} and stride {short_repr(stride)} differ in length")
    if type(requires_grad) is not bool:
        raise Refused(f"tensor requires_grad must be a bool, got {short_repr(requires_grad)}")
    for name, value in (("backward_hooks", backward_hooks), ("metadata", metadata)):
        if value is not None and not (isinstance(value, dict) and len(value) == 0):
            raise Refused(f"tensor {name} must be empty, got {short_repr(value)}")
    if any(n > MAX_TENSOR_ELEMENTS for n in size) or math.prod(size) > MAX_TENSOR_ELEMENTS:
        raise Refused(f"tensor size {short_repr(size)} exceeds MAX_TENSOR_ELEMENTS={MAX_TENSOR_ELEMENTS}")
    numel = math.prod(size)
    if numel:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise Refused(f"tensor view (offset {storage_offset}, size {short_repr(size)}, "
                          f"stride {short_repr(stride)}) reads element {short_repr(last)} of {storage!r}")
    elif storage_offset > storage.numel:
        raise Refused(f"tensor storage_offset {storage_offset} is past the end of {storage!r}")
    return _TensorRef(storage, storage_offset, size, stride, numel)


class _RebuildTensor(_Inert):
    """What the global ``torch._utils._rebuild_tensor_v2`` resolves to: counts calls up to ``MAX_TENSORS``."""

    __slots__ = ("calls",)

    def __init__(self):
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls > MAX_TENSORS:
            raise Refused(f"more than MAX_TENSORS={MAX_TENSORS} tensors")
        return _rebuild_tensor_v2(*args)

    def __repr__(self):
        return "torch._utils._rebuild_tensor_v2"


class _StateDict(collections.OrderedDict):
    """The OrderedDicts of the pickle. ``BUILD`` may only carry torch's ``_metadata`` (versions), dropped."""

    __slots__ = ()

    def __setstate__(self, state):
        if not (type(state) is dict and set(state) <= {"_metadata"}):
            raise Refused(f"data.pkl sets state {short_repr(state)} on an OrderedDict (pickle BUILD), which is refused")


class _OrderedDictFactory(_Inert):
    """What the global ``collections.OrderedDict`` resolves to: ``REDUCE`` may build one, nothing else."""

    __slots__ = ()

    def __call__(self, *args):
        return _StateDict(*args)

    def __repr__(self):
        return "collections.OrderedDict"


class RestrictedUnpickler(pickle.Unpickler):
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
        """The inert stand-in for an allowed global ``module.name``; any other global is refused."""
        if (module, name) in self._globals:
            return self._globals[(module, name)]
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        raise Refused(f"refusing to load global '{module}.{name}' from the checkpoint")

    def persistent_load(self, pid):
        """The checked storage record of torch's ``('storage', type, key, location, numel)`` persistent id."""
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise Refused(f"unsupported persistent id {short_repr(pid)}")
        _, storage_type, key, location, numel = pid
        if not any(storage_type is t for t in _STORAGE_TYPES.values()):
            raise Refused(f"unsupported storage type {short_repr(storage_type)} in persistent id {short_repr(pid)}")
        if type(key) is not str or not _STORAGE_KEY.fullmatch(key):
            raise Refused(f"storage key must be a plain name ({_STORAGE_KEY.pattern}), got {short_repr(key)}")
        if type(location) is not str or len(location) > 64:
            raise Refused(f"storage location must be a short string, got {short_repr(location)}")
        if type(numel) is not int or numel < 0:
            raise Refused(f"storage {key!r}: numel must be a non-negative int, got {short_repr(numel)}")
        known = self._storages.get(key)
        if known is not None:
            if known.storage_type is not storage_type or known.numel != numel:
                raise Refused(f"storage {key!r} declared as {storage_type!r} with {numel} values, "
                              f"earlier as {known.storage_type!r} with {known.numel}")
            return known
        member = f"{self._prefix}/data/{key}" if self._prefix else f"data/{key}"
        info = self._members.get(member)
        if info is None:
            raise Refused(f"storage {key!r}: no member {member!r} in the archive")
        if info.file_size != numel * storage_type.dtype.itemsize:
            raise Refused(f"storage {key!r}: member {member!r} holds {info.file_size} bytes, but {numel} values "
                          f"of {storage_type!r} need {numel * storage_type.dtype.itemsize}")
        storage = self._storages[key] = _Storage(key, storage_type, numel, info)
        return storage



def check_pickle(data: bytes) -> None:
    """Check ``data.pkl`` before unpickling it, simulating the pickle stack (each item: its tuple depth).

    Refuses opcodes outside ``_PICKLE_EFFECTS``, memo indices out of sequence (a huge index makes the C
    unpickler allocate a huge memo table), stack underflows, and tuples or frozensets nested deeper than
    ``MAX_PICKLE_NESTING`` (hashing one, e.g. as a dict key, recurses in C and can overflow the C stack).
    """
    stack, marks, memo = [], [], {}
    for opcode, arg, pos in pickletools.genops(data):
        effect = _PICKLE_EFFECTS.get(opcode.name)
        if effect is None:
            raise Refused(f"data.pkl uses pickle opcode {opcode.name} at byte {pos}, which is refused")
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
                raise Refused(f"data.pkl stores memo index {index} at byte {pos} after only {len(memo)} entries")
            if len(stack) <= fence:
                raise Refused(f"data.pkl underflows the pickle stack at byte {pos}")
            memo[index] = stack[-1]
            continue
        if pushed == "pop" and len(stack) > fence:
            count = 1
        elif pushed == "pop":
            count = "mark"
        if count == "mark":
            if not marks:
                raise Refused(f"data.pkl pops to a mark at byte {pos} without one")
            base = marks.pop()
        else:
            base = len(stack) - count
            if base < fence:
                raise Refused(f"data.pkl underflows the pickle stack at byte {pos}")
        items = stack[base:]
        del stack[base:]
        if pushed == "push":
            stack.append(0)
        elif pushed == "nest":
            stack.append(1 + max(items, default=0))
            if stack[-1] > MAX_PICKLE_NESTING:
                raise Refused(f"data.pkl nests tuples deeper than MAX_PICKLE_NESTING={MAX_PICKLE_NESTING} "
                              f"at byte {pos}")
        elif pushed == "keep":  # the container below the popped items stays on the stack
            if len(stack) <= (marks[-1] if marks else 0):
                raise Refused(f"data.pkl underflows the pickle stack at byte {pos}")
        elif pushed == "dup":
            stack.extend(items * 2)


def unwrap_state_dict(obj) -> dict:
    """The ``{str: _TensorRef}`` state dict of the unpickled ``obj`` (``{"model"/"state_dict": ...}`` unwrapped)."""
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise Refused(f"expected a state dict of tensors, got {type(obj).__name__}")
    bad = [(k, v) for k, v in obj.items() if type(k) is not str or type(v) is not _TensorRef]
    if bad:
        key, value = bad[0]
        raise Refused(f"expected a state dict of tensors, got {len(bad)} other entries, e.g. "
                      f"{short_repr(key)}: {type(value).__name__}")
    return obj

