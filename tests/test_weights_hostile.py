"""Hostile-input tests of the torch-free ``.pth`` reader ``tfcxr.segment.weights.read_torch_state_dict``.

Checkpoints are crafted without torch: ``zipfile`` writes the archive, and ``pickle`` writes ``data.pkl`` with
stand-ins that reproduce torch's format: ``Tensor.__reduce__`` calls the global ``torch._utils._rebuild_tensor_v2``,
and ``TorchPickler.persistent_id`` turns a ``Storage`` into ``('storage', torch.FloatStorage, key, 'cpu', numel)``.
The stand-in globals live in fake ``torch`` / ``torch._utils`` modules that the ``fake_torch`` fixture puts into
``sys.modules`` only while a test runs. Every hostile file must raise ``WeightsError`` starting with its path.
"""

import collections
import io
import os
import pickle
import random
import struct
import subprocess
import sys
import time
import tracemalloc
import types
import zipfile

import numpy as np
import pytest

from tfcxr.segment import weights as W

PREFIX = "archive"
FUZZ_SEED = 20240611
FUZZ_CASES = 250  # per fuzz target (zip bytes, data.pkl bytes)


def _rebuild_tensor_v2(*args):  # pickled as the global torch._utils._rebuild_tensor_v2; never called
    raise AssertionError("the stand-in is only pickled")


_rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
STORAGE_TYPES = {name: type(name, (), {"__module__": "torch"}) for name in W._STORAGE_DTYPES}
CALLED = []  # the sentinel: _sentinel appends here if a checkpoint ever manages to call it


def _sentinel(*args):
    CALLED.append(args)


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


@pytest.fixture
def fake_torch(monkeypatch):
    """Fake ``torch`` and ``torch._utils`` modules holding the stand-in globals, for pickling only."""
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
    with pytest.raises(W.WeightsError) as info:
        W.read_torch_state_dict(path)
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


@pytest.fixture
def valid(fake_torch, tmp_path):
    """Path of a valid checkpoint and the arrays it holds."""
    state, expected = valid_state()
    return write_checkpoint(tmp_path / "valid.pth", state), expected


def one_tensor(tmp_path, tensor, name="hostile.pth"):
    return write_checkpoint(tmp_path / name, state_dict(w=tensor))


# ---------------------------------------------------------------------------------------------- valid files


def test_valid_checkpoint_reads_back(valid):
    path, expected = valid
    got = W.read_torch_state_dict(path)
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
        got = W.read_torch_state_dict(write_checkpoint(tmp_path / name, obj, **kwargs))
        assert list(got) == list(expected), name
        for key, want in expected.items():
            np.testing.assert_array_equal(got[key], want, err_msg=f"{name}: {key}")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_other_pickle_protocols_and_extra_entries(fake_torch, tmp_path, protocol):
    """``torch.save(..., pickle_protocol=p)`` of a checkpoint with non-tensor entries next to the model."""
    state, expected = valid_state()
    extra = {"epoch": 3, "lr": 1e-4, "name": "x", "nested": [(1, (2, (3,))), None, True],
             "hparams": collections.OrderedDict(depth=[2, 2, 6, 2])}
    if protocol >= 4:  # before, sets and bytes pickle as calls of builtins.set / _codecs.encode (refused)
        extra.update(flags={1, 2}, frozen=frozenset({"a"}), blob=b"\0\1")
    data, storages = dumps({"model": state, **extra}, protocol)
    got = W.read_torch_state_dict(write_zip(tmp_path / f"p{protocol}.pth", data, storages.values()))
    assert list(got) == list(expected)
    for key, want in expected.items():
        np.testing.assert_array_equal(got[key], want, err_msg=key)


def test_ordered_dict_reduce_with_an_iterable_is_fine(fake_torch, tmp_path):
    storage = Storage("0", np.arange(3, dtype=np.float32))
    path = write_checkpoint(tmp_path / "reduce.pth", Call(collections.OrderedDict, [("w", Tensor(storage))]))
    np.testing.assert_array_equal(W.read_torch_state_dict(path)["w"], [0, 1, 2])


# ------------------------------------------------------------------------------------------ tensor records


def _storage(n=4, kind="FloatStorage", key="0"):
    return Storage(key, np.arange(n, dtype=W._STORAGE_DTYPES[kind]), kind=kind)


HOSTILE_TENSORS = {  # name: (Tensor factory, expected message fragment)
    "oversized_view": (lambda: Tensor(_storage(1), size=(64, 1024, 1024)), "reads element 67108863"),
    "negative_stride": (lambda: Tensor(_storage(4), offset=3, size=(4,), stride=(-1,)), "non-negative ints"),
    "offset_past_end": (lambda: Tensor(_storage(4), offset=10, size=(1,), stride=(1,)), "reads element 10"),
    "one_past_end": (lambda: Tensor(_storage(6), offset=1, size=(2, 3), stride=(3, 1)), "reads element 6"),
    "stride_past_end": (lambda: Tensor(_storage(6), size=(2, 3), stride=(4, 1)), "reads element 6"),
    "empty_offset_past_end": (lambda: Tensor(_storage(4), offset=5, size=(0,), stride=(1,)), "past the end"),
    "negative_offset": (lambda: Tensor(_storage(4), offset=-1, size=(1,), stride=(1,)), "storage_offset"),
    "bool_offset": (lambda: Tensor(_storage(4), offset=True, size=(1,), stride=(1,)), "storage_offset"),
    "negative_size": (lambda: Tensor(_storage(4), size=(-1,), stride=(1,)), "size must be"),
    "bool_size": (lambda: Tensor(_storage(4), size=(True,), stride=(1,)), "size must be"),
    "float_stride": (lambda: Tensor(_storage(4), size=(2,), stride=(1.0,)), "stride must be"),
    "list_size": (lambda: Tensor(_storage(4), size=[4], stride=(1,)), "size must be"),
    "length_mismatch": (lambda: Tensor(_storage(4), size=(2, 2), stride=(1,)), "differ in length"),
    "too_many_dims": (lambda: Tensor(_storage(4), size=(1,) * 40, stride=(1,) * 40), "at most 32"),
    "too_many_elements": (lambda: Tensor(_storage(1), size=(2**31 + 1,), stride=(0,)), "MAX_TENSOR_ELEMENTS"),
    "huge_int_size": (lambda: Tensor(_storage(1), size=(10**5000,), stride=(0,)), "MAX_TENSOR_ELEMENTS"),
    "storage_is_str": (lambda: Tensor(args=("\0" * 16, 0, (4,), (1,), False, collections.OrderedDict())),
                       "must come from a persistent id"),
    "storage_is_list": (lambda: Tensor(args=([1.0] * 4, 0, (4,), (1,), False, collections.OrderedDict())),
                        "must come from a persistent id"),
    "requires_grad_int": (lambda: Tensor(args=(_storage(4), 0, (4,), (1,), 1, collections.OrderedDict())),
                          "requires_grad"),
    "backward_hooks": (lambda: Tensor(args=(_storage(4), 0, (4,), (1,), False,
                                                  collections.OrderedDict([(0, "hook")]))), "backward_hooks"),
    "backward_hooks_list": (lambda: Tensor(args=(_storage(4), 0, (4,), (1,), False, [])), "backward_hooks"),
    "metadata": (lambda: Tensor(args=(_storage(4), 0, (4,), (1,), False, None, {"conj": True})), "metadata"),
    "too_many_args": (lambda: Tensor(args=(_storage(4), 0, (4,), (1,), False, None, None, 1)), "TypeError"),
    "build_on_tensor": (lambda: Tensor(_storage(4), state={"requires_grad": True}), "pickle BUILD"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TENSORS))
def test_hostile_tensor_records(fake_torch, tmp_path, case):
    factory, match = HOSTILE_TENSORS[case]
    refused(one_tensor(tmp_path, factory()), match)


def test_boundary_view_ending_on_the_last_element_loads(fake_torch, tmp_path):
    got = W.read_torch_state_dict(one_tensor(tmp_path, Tensor(_storage(7), offset=1, size=(2, 3), stride=(3, 1))))
    np.testing.assert_array_equal(got["w"], [[1, 2, 3], [4, 5, 6]])


def test_bool_storage_bytes_must_be_0_or_1(fake_torch, tmp_path):
    storage = Storage("0", np.array([True, False]), kind="BoolStorage", raw=b"\x01\x02")
    refused(one_tensor(tmp_path, Tensor(storage)), "bytes other than 0 and 1")


# ----------------------------------------------------------------------------------------- persistent ids


def _pid_cases():
    float_storage = STORAGE_TYPES["FloatStorage"]
    return {  # name: (persistent id, expected message fragment); the member "archive/data/0" holds 4 floats
        "four_fields": (("storage", float_storage, "0", "cpu"), "unsupported persistent id"),
        "not_storage": (("module", float_storage, "0", "cpu", 4), "unsupported persistent id"),
        "a_list": (["storage", float_storage, "0", "cpu", 4], "unsupported persistent id"),
        "a_string": ("storage", "unsupported persistent id"),
        "type_as_string": (("storage", "FloatStorage", "0", "cpu", 4), "unsupported storage type"),
        "type_ordered_dict": (("storage", collections.OrderedDict, "0", "cpu", 4), "unsupported storage type"),
        "int_key": (("storage", float_storage, 0, "cpu", 4), "storage key must be"),
        "empty_key": (("storage", float_storage, "", "cpu", 4), "storage key must be"),
        "dotdot_key": (("storage", float_storage, "../0", "cpu", 4), "storage key must be"),
        "path_key": (("storage", float_storage, "0/../../0", "cpu", 4), "storage key must be"),
        "nul_key": (("storage", float_storage, "0\0", "cpu", 4), "storage key must be"),
        "int_location": (("storage", float_storage, "0", 0, 4), "location"),
        "str_numel": (("storage", float_storage, "0", "cpu", "4"), "numel must be"),
        "bool_numel": (("storage", float_storage, "0", "cpu", True), "numel must be"),
        "negative_numel": (("storage", float_storage, "0", "cpu", -4), "numel must be"),
        "numel_too_big": (("storage", float_storage, "0", "cpu", 8), "holds 16 bytes, but 8 values"),
        "numel_too_small": (("storage", float_storage, "0", "cpu", 2), "holds 16 bytes, but 2 values"),
        "wrong_dtype_size": (("storage", STORAGE_TYPES["DoubleStorage"], "0", "cpu", 1), "need 8"),
        "unknown_key": (("storage", float_storage, "7", "cpu", 4), "no member 'archive/data/7'"),
    }


@pytest.mark.parametrize("case", sorted(_pid_cases()))
def test_hostile_persistent_ids(fake_torch, tmp_path, case):
    pid, match = _pid_cases()[case]
    storage = Storage("0", np.arange(4, dtype=np.float32), pid=pid)
    path = write_checkpoint(tmp_path / "pid.pth", state_dict(w=Tensor(storage, size=(1,), stride=(1,))),
                            extra=[("0", b"\0" * 16), ("data/0", b"\0" * 16)])  # decoys outside the prefix
    refused(path, match)


def test_storage_redeclared_with_another_type(fake_torch, tmp_path):
    as_float = Storage("0", np.arange(4, dtype=np.float32))
    as_int = Storage("0", np.arange(4, dtype=np.int32), kind="IntStorage")
    path = write_checkpoint(tmp_path / "retyped.pth", state_dict(a=Tensor(as_float), b=Tensor(as_int)))
    refused(path, "storage '0' declared as torch.IntStorage with 4 values, earlier as torch.FloatStorage")


# ----------------------------------------------------------------------------------------- globals, opcodes


def _code_calls(tmp_path):
    return {
        "os_system": Call(os.system, f"touch {tmp_path / 'pwned_system'}"),
        "builtins_eval": Call(eval, f"__import__('pathlib').Path({str(tmp_path / 'pwned_eval')!r}).touch()"),
        "subprocess_popen": Call(subprocess.Popen, ["touch", str(tmp_path / "pwned_popen")]),
        "test_sentinel": Call(_sentinel, "called"),
        "getattr": Call(getattr, "text", "upper"),
    }


@pytest.mark.parametrize("where", ["top", "value", "tensor_arg", "pid", "build_state", "dict_key"])
@pytest.mark.parametrize("call", ["os_system", "builtins_eval", "subprocess_popen", "test_sentinel", "getattr"])
def test_disallowed_globals_never_run(fake_torch, tmp_path, call, where):
    evil = _code_calls(tmp_path)[call]
    storage = _storage(4)
    obj = {
        "top": evil,
        "value": state_dict(w=evil),
        "tensor_arg": state_dict(w=Tensor(storage, offset=evil)),
        "pid": state_dict(w=Tensor(Storage("0", storage.values, pid=("storage", evil, "0", "cpu", 4)))),
        "build_state": Call(collections.OrderedDict, state={"_metadata": evil}),
        "dict_key": {(evil,): Tensor(storage)},
    }[where]
    message = refused(write_checkpoint(tmp_path / "evil.pth", obj), "refusing to load global")
    assert not list(tmp_path.glob("pwned*")), message
    assert not CALLED


def test_disallowed_torch_globals(fake_torch, tmp_path):
    for module, name in [("torch._utils", "_rebuild_parameter"), ("torch", "Tensor"), ("torch", "load"),
                         ("torch", "UntypedStorage"), ("collections", "defaultdict"), ("builtins", "dict")]:
        data = b"\x80\x02" + pickle.GLOBAL + f"{module}\n{name}\n".encode() + pickle.STOP
        refused(write_zip(tmp_path / "global.pth", data), f"refusing to load global '{module}.{name}'")


def _global(module, name):
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _fragment(obj, protocol=2):
    """The opcodes pushing ``obj`` (a plain value), without PROTO and STOP."""
    return pickle.dumps(obj, protocol=protocol)[2:-1]


HAND_WRITTEN = {  # name: (data.pkl bytes, expected message fragment)
    "build_on_rebuild_function": (_global("torch._utils", "_rebuild_tensor_v2") + _fragment({"x": 1}) + pickle.BUILD,
                                  "pickle BUILD"),
    "build_slots_on_rebuild_function": (_global("torch._utils", "_rebuild_tensor_v2")
                                        + _fragment((None, {"__defaults__": (1,)})) + pickle.BUILD, "pickle BUILD"),
    "build_on_storage_type": (_global("torch", "FloatStorage") + _fragment({"dtype": "O"}) + pickle.BUILD,
                              "pickle BUILD"),
    "build_on_ordered_dict_factory": (_global("collections", "OrderedDict") + _fragment({"x": 1}) + pickle.BUILD,
                                      "pickle BUILD"),
    "build_attribute_on_ordered_dict": (_global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
                                        + _fragment({"keys": 1}) + pickle.BUILD, "on an OrderedDict"),
    "build_slots_on_ordered_dict": (_global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
                                    + _fragment((None, {"keys": 1})) + pickle.BUILD, "on an OrderedDict"),
    "storage_is_bytes": (_global("torch._utils", "_rebuild_tensor_v2")
                         + _fragment((b"\0" * 16, 0, (4,), (1,), False), protocol=3) + pickle.REDUCE,
                         "must come from a persistent id, got b'"),
    "reduce_storage_type": (_global("torch", "FloatStorage") + _fragment((4,)) + pickle.REDUCE, "not callable"),
    "reduce_ordered_dict_int": (_global("collections", "OrderedDict") + _fragment((5,)) + pickle.REDUCE,
                                "TypeError"),
    "newobj_ordered_dict": (_global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.NEWOBJ,
                            "opcode NEWOBJ"),
    "inst": (pickle.MARK + pickle.INST + b"collections\nOrderedDict\n", "opcode INST"),
    "obj": (pickle.MARK + _global("collections", "OrderedDict") + pickle.OBJ, "opcode OBJ"),
    "ext1": (pickle.EXT1 + b"\x01", "opcode EXT1"),
    "text_persid": (pickle.PERSID + b"0\n", "opcode PERSID"),
    "huge_memo_index": (pickle.NONE + pickle.LONG_BINPUT + struct.pack("<I", 2**31 - 1), "memo index 2147483647"),
    "memo_get_missing": (pickle.BINGET + b"\x05", "cannot read checkpoint"),
    "not_a_pickle": (b"\0\0 not a pickle", "cannot read checkpoint (ValueError"),
    "text_file": (b"hello, world", "data.pkl pops to a mark at byte 2 without one"),
    "no_stop": (pickle.EMPTY_DICT, "cannot read checkpoint"),
    "bad_utf8": (pickle.SHORT_BINUNICODE + b"\x02\xff\xfe", "cannot read checkpoint"),
    "huge_long": (pickle.LONG4 + struct.pack("<i", 1 << 30) + b"\x01", "cannot read checkpoint"),
    "stack_underflow": (pickle.REDUCE, "underflows the pickle stack at byte 2"),
    "underflow_below_mark": (pickle.NONE + pickle.MARK + pickle.TUPLE1, "underflows the pickle stack at byte 4"),
    "pop_mark_without_mark": (pickle.POP_MARK, "pops to a mark at byte 2 without one"),
    "deep_tuple_key": (pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.TUPLE1 * 10**6 + pickle.NONE + pickle.SETITEM,
                       "nests tuples deeper than MAX_PICKLE_NESTING=100 at byte 103"),  # hashing it crashes CPython
    "deep_frozenset_via_memo": (pickle.EMPTY_TUPLE + (pickle.BINPUT + b"\0" + pickle.POP + pickle.MARK
                                                      + pickle.BINGET + b"\0" + pickle.FROZENSET) * 101,
                                "nests tuples deeper than MAX_PICKLE_NESTING=100"),
    "build_on_storage": (pickle.MARK + _fragment("storage") + _global("torch", "FloatStorage") + _fragment("0")
                         + _fragment("cpu") + _fragment(4) + pickle.TUPLE + pickle.BINPERSID
                         + _fragment({"numel": 10**9}) + pickle.BUILD, "on storage '0' (torch.FloatStorage, 4 values)"),
    "top_level_list": (_fragment([1, 2]), "expected a state dict of tensors, got list"),
    "int_values": (_fragment({"w": 1}), "expected a state dict of tensors, got 1 other entries, e.g. 'w': int"),
    "string_value": (_fragment({"w": "x"}), "'w': str"),
    "nested_dict": (_fragment({"w": {"v": 1}}), "'w': dict"),
    "wrapped_non_tensor": (_fragment({"model": 5}), "'model': int"),
    "int_key": (_fragment({1: None}), "e.g. 1: NoneType"),
}


@pytest.mark.parametrize("case", sorted(HAND_WRITTEN))
def test_hand_written_pickles(tmp_path, case):
    body, match = HAND_WRITTEN[case]
    data = {"not_a_pickle": body, "text_file": body, "no_stop": b"\x80\x02" + body}.get(
        case, b"\x80\x02" + body + pickle.STOP)
    before = (dict(W._rebuild_tensor_v2.__dict__), W._rebuild_tensor_v2.__defaults__,
              {name: (t.name, t.dtype) for name, t in W._STORAGE_TYPES.items()})
    tracemalloc.start()
    try:
        refused(write_zip(tmp_path / "hand.pth", data, extra=[(f"{PREFIX}/data/0", bytes(16))]), match)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak  # e.g. the huge memo index allocates nothing
    after = (dict(W._rebuild_tensor_v2.__dict__), W._rebuild_tensor_v2.__defaults__,
             {name: (t.name, t.dtype) for name, t in W._STORAGE_TYPES.items()})
    assert after == before  # nothing of the reader was modified


def test_state_dict_holding_non_tensors(fake_torch, tmp_path):
    tensor = Tensor(_storage(4))
    for name, obj, match in [("list.pth", state_dict(w=[tensor]), "'w': list"),
                             ("mixed.pth", state_dict(a=tensor, b=3.5), "1 other entries, e.g. 'b': float"),
                             ("key.pth", {("w",): tensor}, "e.g. ('w',): _TensorRef")]:
        refused(write_checkpoint(tmp_path / name, obj), match)


def test_too_many_tensors(fake_torch, tmp_path, monkeypatch):
    monkeypatch.setattr(W, "MAX_TENSORS", 2)
    storage = _storage(4)
    refused(write_checkpoint(tmp_path / "many.pth", state_dict(a=Tensor(storage), b=Tensor(storage),
                                                               c=Tensor(storage))), "MAX_TENSORS=2")


def test_total_tensor_bytes(fake_torch, tmp_path, monkeypatch):
    monkeypatch.setattr(W, "MAX_TOTAL_TENSOR_BYTES", 10_000)
    path = one_tensor(tmp_path, Tensor(_storage(1), size=(100, 100), stride=(0, 0)))  # 40 kB from 4 bytes
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
    np.testing.assert_array_equal(W.read_torch_state_dict(path)["w"], storage.values)  # a valid deflated file
    monkeypatch.setattr(W, "MAX_MEMBER_BYTES", 2**20)
    refused(path, "'archive/data/0' declares 4194304 bytes, more than MAX_MEMBER_BYTES=1048576")
    monkeypatch.setattr(W, "MAX_MEMBER_BYTES", 8 * 2**20)
    monkeypatch.setattr(W, "MAX_TOTAL_MEMBER_BYTES", 2**20)
    refused(path, "more than MAX_TOTAL_MEMBER_BYTES=1048576")
    monkeypatch.setattr(W, "MAX_TOTAL_MEMBER_BYTES", 8 * 2**20)
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
    monkeypatch.setattr(W, "MAX_ZIP_MEMBERS", 8)
    refused(path, "zip members, more than MAX_ZIP_MEMBERS=8")
    monkeypatch.setattr(W, "MAX_ZIP_MEMBERS", 100)
    monkeypatch.setattr(W, "MAX_CENTRAL_DIRECTORY_BYTES", 200)
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
    monkeypatch.setattr(W, "MAX_PICKLE_BYTES", 100)
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
                got = W.read_torch_state_dict(path)
            except W.WeightsError as err:
                assert str(err).startswith(f"{path}: "), (target, case, how, err)
                counts["refused"] += 1
                continue
            except Exception as err:  # noqa: BLE001 - the point of the test
                pytest.fail(f"seed {seed}, {target} case {case} ({how}): {type(err).__name__}: {err}")
            assert all(type(k) is str and type(v) is np.ndarray for k, v in got.items()), (target, case, how)
            assert sum(v.nbytes for v in got.values()) <= W.MAX_TOTAL_TENSOR_BYTES, (target, case, how)
            counts["loaded"] += 1
    return counts


def test_fuzz_mutations_seed_20240611(fake_torch, tmp_path, monkeypatch):
    """Seed 20240611, 250 mutations of the zip bytes + 250 of data.pkl: each loads or raises WeightsError."""
    monkeypatch.setattr(W, "MAX_TOTAL_TENSOR_BYTES", 2**20)  # keep loads of mutated (e.g. expanded) views small
    start = time.perf_counter()
    counts = fuzz(tmp_path)
    assert counts["loaded"] > 0 and counts["refused"] > 0, counts
    assert time.perf_counter() - start < 30, counts
