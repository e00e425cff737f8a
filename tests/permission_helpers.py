"""Permission checks for the tests of what tfcxr writes (files must be shareable under the user's umask)."""

import os
import pathlib
import stat


def mode(path) -> int:
    """The permission bits of `path` (e.g. 0o644)."""
    return stat.S_IMODE(os.stat(path).st_mode)


def not_shared(root) -> list[str]:
    """Everything under `root` (itself included) that group and other cannot read: files lacking 0o044,
    folders lacking 0o055 (read + traverse). Returns ``"<mode> <path>"`` strings; empty when all is readable."""
    root = pathlib.Path(root)
    bad = []
    for path in [root, *sorted(root.rglob("*"))]:
        if path.is_symlink():
            continue
        wanted = 0o055 if path.is_dir() else 0o044
        if mode(path) & wanted != wanted:
            bad.append(f"{mode(path):o} {path}")
    return bad
