"""Hostile-input tests of ``tfcxr.segment.torch_pickle``, the restricted unpickler of a checkpoint's ``data.pkl``.

Checkpoints are written without torch by ``torch_checkpoint_helpers`` and read through
``tfcxr.segment.torch_checkpoint.read_torch_state_dict``: tensor records, persistent ids, globals and opcodes.
"""

import collections
import os
import pickle
import struct
import subprocess
import tracemalloc
import zipfile

import numpy as np
import pytest
from torch_checkpoint_helpers import (CALLED, PREFIX, STORAGE_TYPES, Call, Storage, Tensor, arange_storage, dumps,
                                      fake_torch_modules, one_tensor, refused, state_dict, valid_state,
                                      write_checkpoint, write_zip)

from tfcxr.segment import torch_checkpoint as C
from tfcxr.segment import torch_pickle as P
from tfcxr.segment.weights import WeightsError


@pytest.fixture
def fake_torch(monkeypatch):
    """Fake ``torch`` modules while the test runs (``torch_checkpoint_helpers.fake_torch_modules``)."""
    yield from fake_torch_modules(monkeypatch)


def _sentinel(*args):
    CALLED.append(args)


# ------------------------------------------------------------------------------------------- valid pickles


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_other_pickle_protocols_and_extra_entries(fake_torch, tmp_path, protocol):
    """``torch.save(..., pickle_protocol=p)`` of a checkpoint with non-tensor entries next to the model."""
    state, expected = valid_state()
    extra = {"epoch": 3, "lr": 1e-4, "name": "x", "nested": [(1, (2, (3,))), None, True],
             "hparams": collections.OrderedDict(depth=[2, 2, 6, 2])}
    if protocol >= 4:  # before, sets and bytes pickle as calls of builtins.set / _codecs.encode (refused)
        extra.update(flags={1, 2}, frozen=frozenset({"a"}), blob=b"\0\1")
    data, storages = dumps({"model": state, **extra}, protocol)
    got = C.read_torch_state_dict(write_zip(tmp_path / f"p{protocol}.pth", data, storages.values()))
    assert list(got) == list(expected)
    for key, want in expected.items():
        np.testing.assert_array_equal(got[key], want, err_msg=key)


def test_ordered_dict_reduce_with_an_iterable_is_fine(fake_torch, tmp_path):
    storage = Storage("0", np.arange(3, dtype=np.float32))
    path = write_checkpoint(tmp_path / "reduce.pth", Call(collections.OrderedDict, [("w", Tensor(storage))]))
    np.testing.assert_array_equal(C.read_torch_state_dict(path)["w"], [0, 1, 2])


# ------------------------------------------------------------------------------------------ tensor records


HOSTILE_TENSORS = {  # name: (Tensor factory, expected message fragment)
    "oversized_view": (lambda: Tensor(arange_storage(1), size=(64, 1024, 1024)), "reads element 67108863"),
    "negative_stride": (lambda: Tensor(arange_storage(4), offset=3, size=(4,), stride=(-1,)), "non-negative ints"),
    "offset_past_end": (lambda: Tensor(arange_storage(4), offset=10, size=(1,), stride=(1,)), "reads element 10"),
    "one_past_end": (lambda: Tensor(arange_storage(6), offset=1, size=(2, 3), stride=(3, 1)), "reads element 6"),
    "stride_past_end": (lambda: Tensor(arange_storage(6), size=(2, 3), stride=(4, 1)), "reads element 6"),
    "empty_offset_past_end": (lambda: Tensor(arange_storage(4), offset=5, size=(0,), stride=(1,)), "past the end"),
    "negative_offset": (lambda: Tensor(arange_storage(4), offset=-1, size=(1,), stride=(1,)), "storage_offset"),
    "bool_offset": (lambda: Tensor(arange_storage(4), offset=True, size=(1,), stride=(1,)), "storage_offset"),
    "negative_size": (lambda: Tensor(arange_storage(4), size=(-1,), stride=(1,)), "size must be"),
    "bool_size": (lambda: Tensor(arange_storage(4), size=(True,), stride=(1,)), "size must be"),
    "float_stride": (lambda: Tensor(arange_storage(4), size=(2,), stride=(1.0,)), "stride must be"),
    "list_size": (lambda: Tensor(arange_storage(4), size=[4], stride=(1,)), "size must be"),
    "length_mismatch": (lambda: Tensor(arange_storage(4), size=(2, 2), stride=(1,)), "differ in length"),
    "too_many_dims": (lambda: Tensor(arange_storage(4), size=(1,) * 40, stride=(1,) * 40), "at most 32"),
    "too_many_elements": (lambda: Tensor(arange_storage(1), size=(2**31 + 1,), stride=(0,)), "MAX_TENSOR_ELEMENTS"),
    "huge_int_size": (lambda: Tensor(arange_storage(1), size=(10**5000,), stride=(0,)), "MAX_TENSOR_ELEMENTS"),
    "storage_is_str": (lambda: Tensor(args=("\0" * 16, 0, (4,), (1,), False, collections.OrderedDict())),
                       "must come from a persistent id"),
    "storage_is_list": (lambda: Tensor(args=([1.0] * 4, 0, (4,), (1,), False, collections.OrderedDict())),
                        "must come from a persistent id"),
    "requires_grad_int": (lambda: Tensor(args=(arange_storage(4), 0, (4,), (1,), 1, collections.OrderedDict())),
                          "requires_grad"),
    "backward_hooks": (lambda: Tensor(args=(arange_storage(4), 0, (4,), (1,), False,
                                                  collections.OrderedDict([(0, "hook")]))), "backward_hooks"),
    "backward_hooks_list": (lambda: Tensor(args=(arange_storage(4), 0, (4,), (1,), False, [])), "backward_hooks"),
    "metadata": (lambda: Tensor(args=(arange_storage(4), 0, (4,), (1,), False, None, {"conj": True})), "metadata"),
    "too_many_args": (lambda: Tensor(args=(arange_storage(4), 0, (4,), (1,), False, None, None, 1)), "TypeError"),
    "build_on_tensor": (lambda: Tensor(arange_storage(4), state={"requires_grad": True}), "pickle BUILD"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TENSORS))
def test_hostile_tensor_records(fake_torch, tmp_path, case):
    factory, match = HOSTILE_TENSORS[case]
    refused(one_tensor(tmp_path, factory()), match)


def test_boundary_view_ending_on_the_last_element_loads(fake_torch, tmp_path):
    got = C.read_torch_state_dict(one_tensor(tmp_path, Tensor(arange_storage(7), offset=1, size=(2, 3), stride=(3, 1))))
    np.testing.assert_array_equal(got["w"], [[1, 2, 3], [4, 5, 6]])


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
    storage = arange_storage(4)
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


def test_restricted_reader_refuses_other_globals(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"x": os.getcwd}))
    with pytest.raises(WeightsError, match=r"evil\.pth.*refusing to load global '(posix|nt)\.getcwd'"):
        C.read_torch_state_dict(path)
    (tmp_path / "not_zip.pth").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="not_zip.pth: not a PyTorch zip checkpoint"):
        C.read_torch_state_dict(tmp_path / "not_zip.pth")


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
    before = (dict(P._rebuild_tensor_v2.__dict__), P._rebuild_tensor_v2.__defaults__,
              {name: (t.name, t.dtype) for name, t in P._STORAGE_TYPES.items()})
    tracemalloc.start()
    try:
        refused(write_zip(tmp_path / "hand.pth", data, extra=[(f"{PREFIX}/data/0", bytes(16))]), match)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak  # e.g. the huge memo index allocates nothing
    after = (dict(P._rebuild_tensor_v2.__dict__), P._rebuild_tensor_v2.__defaults__,
             {name: (t.name, t.dtype) for name, t in P._STORAGE_TYPES.items()})
    assert after == before  # nothing of the reader was modified


def test_state_dict_holding_non_tensors(fake_torch, tmp_path):
    tensor = Tensor(arange_storage(4))
    for name, obj, match in [("list.pth", state_dict(w=[tensor]), "'w': list"),
                             ("mixed.pth", state_dict(a=tensor, b=3.5), "1 other entries, e.g. 'b': float"),
                             ("key.pth", {("w",): tensor}, "e.g. ('w',): _TensorRef")]:
        refused(write_checkpoint(tmp_path / name, obj), match)


def test_too_many_tensors(fake_torch, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "MAX_TENSORS", 2)
    storage = arange_storage(4)
    refused(write_checkpoint(tmp_path / "many.pth", state_dict(a=Tensor(storage), b=Tensor(storage),
                                                               c=Tensor(storage))), "MAX_TENSORS=2")
