"""The TF Serving model layout: ``<out>/<model_name>/<version:int>/`` and a generated ``<out>/models.config``.

TF Serving watches ``base_path`` and loads the numeric sub-folders only, so a version is written to a hidden
temporary folder first and renamed into place when complete (:func:`publish_version`); a half-written export is
never served.

``models.config`` is regenerated from what is on disk: every ``<out>/<name>/`` holding at least one numeric
version with a ``saved_model.pb`` becomes one entry, with ``base_path`` seen from inside the serving container
(``/models/<name>`` by default, matching ``export/docker-compose.yml``).
"""

from __future__ import annotations

import os
import pathlib
import re

from tfcxr.atomic import make_staging_dir, write_text_atomic

MODELS_CONFIG = "models.config"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_model_name(name: str) -> str:
    """Return `name` if it is a valid TF Serving model name (letters, digits, `_.-`), else raise ValueError."""
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise ValueError(
            "`model_name` must start with a letter or digit and use only letters, digits, '_', '.' and '-'. "
            f"Received: model_name={name!r}"
        )
    return name


def versions(model_dir) -> list[int]:
    """Sorted integer versions under `model_dir` that hold a complete SavedModel (``saved_model.pb``)."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(
        int(child.name)
        for child in model_dir.iterdir()
        if child.name.isdigit() and (child / "saved_model.pb").is_file()
    )


def resolve_version(out_dir, model_name: str, version: int | None = None) -> int:
    """The version to write: `version` if given (must be a new positive int), else 1 + the highest existing one.

    Raises:
        ValueError: `version` < 1.
        FileExistsError: ``<out_dir>/<model_name>/<version>`` already exists.
    """
    model_dir = pathlib.Path(out_dir) / check_model_name(model_name)
    if version is None:
        existing = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()] if model_dir.is_dir() else []
        return max(existing, default=0) + 1
    if int(version) < 1:
        raise ValueError(f"`version` must be a positive integer. Received: version={version!r}")
    target = model_dir / str(int(version))
    if target.exists():
        raise FileExistsError(f"{target}: version {int(version)} already exists; pick another --version")
    return int(version)


def staging_dir(out_dir, model_name: str, version: int) -> pathlib.Path:
    """A fresh, empty hidden folder beside the final version folder (TF Serving ignores non-numeric names).

    Made by :func:`tfcxr.atomic.make_staging_dir`: a unique name, mode ``0o777 & ~umask`` (so the published
    version folder is as readable as any folder the user creates).
    """
    return make_staging_dir(pathlib.Path(out_dir) / check_model_name(model_name) / str(int(version)))


def publish_version(staging, out_dir, model_name: str, version: int) -> pathlib.Path:
    """Atomically rename `staging` to ``<out_dir>/<model_name>/<version>`` and regenerate ``models.config``."""
    target = pathlib.Path(out_dir) / check_model_name(model_name) / str(int(version))
    if target.exists():
        raise FileExistsError(f"{target}: version {int(version)} already exists; pick another --version")
    os.replace(staging, target)
    write_models_config(out_dir)
    return target


def models_config_text(model_names, base_path: str = "/models") -> str:
    """The text-format ``ModelServerConfig`` serving each of `model_names` from ``<base_path>/<name>``.

    Every model serves its latest version (TF Serving's default version policy).
    """
    entries = []
    for name in sorted(model_names):
        check_model_name(name)
        entries.append(
            "  config {\n"
            f'    name: "{name}"\n'
            f'    base_path: "{base_path.rstrip("/")}/{name}"\n'
            '    model_platform: "tensorflow"\n'
            "  }\n"
        )
    return "model_config_list {\n" + "".join(entries) + "}\n"


def write_models_config(out_dir, base_path: str = "/models") -> pathlib.Path:
    """Regenerate ``<out_dir>/models.config`` from the model folders found under `out_dir`; return its path."""
    out_dir = pathlib.Path(out_dir)
    names = [child.name for child in sorted(out_dir.iterdir()) if child.is_dir() and versions(child)]
    return write_text_atomic(out_dir / MODELS_CONFIG, models_config_text(names, base_path))
