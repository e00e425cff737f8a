"""Crafting PyTorch ``.pth`` checkpoints without torch, for the tests of ``tfcxr.segment.torch_checkpoint`` and
``tfcxr.segment.torch_pickle``.

``zipfile`` writes the archive, and ``pickle`` writes ``data.pkl`` with stand-ins that reproduce torch's format:
``Tensor.__reduce__`` calls the global ``torch._utils._rebuild_tensor_v2``, and ``TorchPickler.persistent_id``
turns a ``Storage`` into ``('storage', torch.FloatStorage, key, 'cpu', numel)``. The stand-in globals live in fake
``torch`` / ``torch._utils`` modules that ``fake_torch_modules`` (the test files' ``fake_torch`` fixture) puts
into ``sys.modules`` only while a test runs. Every hostile file must raise ``WeightsError`` starting with its
path (``refused``).
"""

import collections
import io
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

from tfcxr.segment import torch_checkpoint as C
from tfcxr.segment import torch_pickle as P
from tfcxr.segment.weights import WeightsError

PREFIX = "archive"


def _rebuild_tensor_v2(*args):  # pickled as the global torch._utils._rebuild_tensor_v2; never called
    raise AssertionError("the stand-in is only pickled")


_rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
STORAGE_TYPES = {name: type(name, (), {"__module__": "torch"}) for name in P._STORAGE_DTYPES}
CALLED = []  # the sentinel of the tests: appended to if a checkpoint ever manages to call it


class Storage:
    """A storage to write: ``values`` (1-D) in member ``data/<key>``; ``pid``/``raw`` override what is written.

    ``raw=None`` writes no member; by default the member holds ``values.tobytes()`` and the persistent id is
    ``('storage', torch.<kind>, key, 'cpu', values.size)``.
    """

    def __init__(self, key, values, kind="FloatStorage", pid=None, raw=b"default"):
        self.key, self.values, self.kind = key, np.asarray(values), kind
        self.raw = self.values.tobytes() if raw == b"default" else raw
        self.pid = pid if pid is not None else ("storage", STORAGE_TYPES[kind], key, "cpu", self.values.size)


class Tensor:
    """Pickles like a torch tensor: ``_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``.

    ``args`` replaces the whole argument tuple; ``state`` adds a BUILD after the REDUCE.
    """

    def __init__(self, storage=None, offset=0, size=None, stride=None, args=None, state=None):
        if args is None:
            size = (storage.values.size,) if size is None else size
            stride = tuple(int(np.prod(size[i + 1:])) for i in range(len(size))) if stride is None else stride
            args = (storage, offset, size, stride, False, collections.OrderedDict())
        self.args, self.state = args, state

    def __reduce__(self):
        return (_rebuild_tensor_v2, self.args) if self.state is None else (_rebuild_tensor_v2, self.args, self.state)


class Call:
    """Pickles as ``func(*args)`` (a REDUCE of the global ``func``)."""

    def __init__(self, func, *args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


class TorchPickler(pickle.Pickler):
    """Protocol-2 pickler writing ``Storage`` objects as torch's persistent ids; collects them in ``storages``."""

    def __init__(self, file, protocol=2):
        super().__init__(file, protocol=protocol)
        self.storages = {}

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            self.storages.setdefault(obj.key, obj)
            return obj.pid
        return None


def fake_torch_modules(monkeypatch):
    """Body of the test files' ``fake_torch`` fixture (``yield from`` it): fake ``torch`` and ``torch._utils``
    modules holding the stand-in globals, for pickling only; fails the test if the sentinel was called."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    for name, cls in STORAGE_TYPES.items():
        setattr(torch, name, cls)
    utils._rebuild_tensor_v2, torch._utils = _rebuild_tensor_v2, utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    CALLED.clear()
    yield
    assert not CALLED, f"a checkpoint called the sentinel: {CALLED}"


def dumps(obj, protocol=2):
    """``(data.pkl bytes, {key: Storage})`` of ``obj``; needs the ``fake_torch`` fixture."""
    buffer = io.BytesIO()
    pickler = TorchPickler(buffer, protocol)
    pickler.dump(obj)
    return buffer.getvalue(), pickler.storages


def write_zip(path, data_pkl, storages=(), byteorder=b"little", extra=(), compression=zipfile.ZIP_STORED):
    """A torch.save-like zip: ``archive/data.pkl``, ``archive/byteorder``, ``archive/data/<key>``, ``extra``."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr(f"{PREFIX}/data.pkl", data_pkl)
        if byteorder is not None:
            archive.writestr(f"{PREFIX}/byteorder", byteorder)
        for storage in storages:
            if storage.raw is not None:
                archive.writestr(f"{PREFIX}/data/{storage.key}", storage.raw)
        for name, payload in extra:
            archive.writestr(name, payload)
        archive.writestr(f"{PREFIX}/version", b"3\n")
    return path


def write_checkpoint(path, obj, **kwargs):
    """Pickle ``obj`` (with ``fake_torch``) and write it with its storages as a checkpoint at ``path``."""
    data, storages = dumps(obj)
    return write_zip(path, data, storages.values(), **kwargs)


def state_dict(**tensors):
    """An OrderedDict carrying torch's ``_metadata`` attribute (pickled as a BUILD, as torch.save does)."""
    state = collections.OrderedDict(tensors)
    state._metadata = collections.OrderedDict([("", {"version": 1})])
    return state


def refused(path, match=""):
    """Assert that reading ``path`` raises WeightsError starting with the path and containing ``match``."""
    with pytest.raises(WeightsError) as info:
        C.read_torch_state_dict(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert match in message, message
    return message


def valid_state():
    """``(state dict of Tensor stand-ins, {key: expected np.ndarray})`` covering the layouts torch writes."""
    s0 = Storage("0", np.arange(48, dtype=np.float32))
    s1 = Storage("1", np.arange(6, dtype=np.float32) - 2.5)
    s2 = Storage("2", np.arange(10, dtype=np.int64) * 7, kind="LongStorage")
    s3 = Storage("3", np.array([1.5, -2.0, 3.25, 4.0]), kind="DoubleStorage")
    s4 = Storage("4", np.array([True, False, True]), kind="BoolStorage")
    s5 = Storage("5", np.array([0.5, -1.0, 2.0, 65504.0], np.float16), kind="HalfStorage")
    s6 = Storage("6", np.array([12], np.int64), kind="LongStorage")
    s7 = Storage("7", np.zeros(0, np.float32))
    s8 = Storage("8", np.array([1, -2, 3, -4], np.int8), kind="CharStorage")
    tensors = {
        "conv.weight": (Tensor(s0, size=(4, 3, 2, 2)), np.arange(48, dtype=np.float32).reshape(4, 3, 2, 2)),
        "linear.weight": (Tensor(s1, size=(3, 2), stride=(1, 3)), s1.values.reshape(2, 3).T),  # a transposed view
        "offset.view": (Tensor(s2, offset=3, size=(2, 2), stride=(2, 1)), (np.arange(10) * 7)[3:7].reshape(2, 2)),
        "shared.full": (Tensor(s3), np.array([1.5, -2.0, 3.25, 4.0])),
        "shared.tail": (Tensor(s3, offset=1, size=(2,), stride=(2,)), np.array([-2.0, 4.0])),
        "mask": (Tensor(s4), np.array([True, False, True])),
        "half": (Tensor(s5, size=(2, 2)), np.array([[0.5, -1.0], [2.0, 65504.0]], np.float16)),
        "bn.num_batches_tracked": (Tensor(s6, size=(), stride=()), np.array(12, np.int64)),
        "empty": (Tensor(s7, size=(0, 3), stride=(3, 1)), np.zeros((0, 3), np.float32)),
        "expanded": (Tensor(s8, size=(3, 4), stride=(0, 1)), np.tile(np.array([1, -2, 3, -4], np.int8), (3, 1))),
        "unit.dims": (Tensor(s0, offset=40, size=(1, 4, 1), stride=(1000, 2, 77)),  # odd strides of size-1 dims
                      np.array([40, 42, 44, 46], np.float32).reshape(1, 4, 1)),
    }
    return state_dict(**{k: t for k, (t, _) in tensors.items()}), {k: e for k, (_, e) in tensors.items()}


def one_tensor(tmp_path, tensor, name="hostile.pth"):
    """A checkpoint at ``tmp_path/name`` holding the state dict ``{"w": tensor}``."""
    return write_checkpoint(tmp_path / name, state_dict(w=tensor))

def arange_storage(n=4, kind="FloatStorage", key="0"):
    """A storage of ``n`` values ``0 .. n-1`` of torch type ``kind``."""
    return Storage(key, np.arange(n, dtype=P._STORAGE_DTYPES[kind]), kind=kind)
