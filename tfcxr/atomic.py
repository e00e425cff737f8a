"""Atomic file and folder writes that respect the process umask (the one owner of write-then-rename in tfcxr).

A file is written to a unique hidden temporary file beside its destination, then moved onto it with
``os.replace``: readers see the old file or the new one, never half of one, and a failure leaves neither a
temporary file nor a new target. The temporary file is created with ``os.open(..., 0o666)``, so the kernel
applies the umask (and any default ACL) exactly as for ``open(path, "w")``; ``tempfile.mkstemp`` would make it
0600, unreadable by a serving container or another user. Staging folders are made with ``os.mkdir(..., 0o777)``
for the same reason (``tempfile.mkdtemp`` makes 0700).

    with atomic_write(path, "w") as handle:       # text or binary handle on the temporary file
        handle.write(text)
    write_bytes_atomic(path, data)
    write_text_atomic(path, text)
    staging = make_staging_dir(target)             # empty folder beside `target`, to os.replace onto it when done
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import uuid

_WRITE_MODES = ("w", "wt", "wb")
_ATTEMPTS = 100


def _candidate(target: pathlib.Path) -> pathlib.Path:
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")


def _create_unique(target: pathlib.Path, create) -> pathlib.Path:
    """Call ``create(candidate)`` on fresh hidden names beside `target` until one does not exist yet."""
    for _ in range(_ATTEMPTS):
        candidate = _candidate(target)
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{target}: could not create a unique temporary name beside it")


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None,
                 fsync: bool = False):
    """Context manager: a handle on a temporary file that replaces `path` when the block ends without error.

    Args:
        path: destination file; its parent folder must exist.
        mode: "wb" (bytes) or "w"/"wt" (text).
        encoding, newline: as for :func:`open`, text mode only (encoding defaults to UTF-8).
        fsync: flush the file and its folder to disk before returning (crash-safe, slower).

    Yields:
        the open file object. The final file has mode ``0o666 & ~umask``. On an exception inside the block the
        temporary file is removed, `path` is left as it was, and the exception propagates.
    """
    if mode not in _WRITE_MODES:
        raise ValueError(f"`mode` must be one of {_WRITE_MODES}. Received: mode={mode!r} for {path}")
    if "b" in mode and (encoding is not None or newline is not None):
        raise ValueError(f"{path}: `encoding` and `newline` are for text mode, not mode={mode!r}")
    target = pathlib.Path(path)
    fds = []
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    tmp = _create_unique(target, lambda candidate: fds.append(os.open(candidate, flags, 0o666)))
    try:
        text = {} if "b" in mode else {"encoding": encoding or "utf-8", "newline": newline}
        with os.fdopen(fds[0], mode, **text) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(target.parent)


def write_bytes_atomic(path, data: bytes, *, fsync: bool = False) -> pathlib.Path:
    """Write `data` to `path` atomically (see :func:`atomic_write`); returns the path."""
    with atomic_write(path, "wb", fsync=fsync) as handle:
        handle.write(data)
    return pathlib.Path(path)


def write_text_atomic(path, text: str, *, encoding: str = "utf-8", fsync: bool = False) -> pathlib.Path:
    """Write `text` to `path` atomically (see :func:`atomic_write`); returns the path."""
    with atomic_write(path, "w", encoding=encoding, fsync=fsync) as handle:
        handle.write(text)
    return pathlib.Path(path)


def make_staging_dir(target) -> pathlib.Path:
    """Create an empty hidden folder beside `target`, mode ``0o777 & ~umask``, to fill and ``os.replace`` onto it.

    The name (``.<target name>.<random>.tmp``) is unique, so concurrent writers never share a staging folder, and
    it lies in the same folder (same filesystem) as `target`, so the final rename is atomic. The parent folder is
    created when missing.
    """
    target = pathlib.Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return _create_unique(target, lambda candidate: os.mkdir(candidate, 0o777))
