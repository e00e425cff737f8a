"""Register tfcxr's folder-style TFDS builders (under `<repo>/datasets/`) with TFDS.

    import tfcxr.datasets  # registers nih_cxr14 and cxr_lung_masks
    ds = tfds.load("nih_cxr14", split="train", download_and_prepare_kwargs={
        "download_config": tfds.download.DownloadConfig(manual_dir="/data/nih")})

`datasets/` is deliberately not a Python package (it would shadow the
Hugging Face `datasets` library). Each builder is imported as
`<name>.<name>_dataset_builder` with `datasets/` on `sys.path` only during the
import, as `tfds build datasets/<name>` does: TFDS derives the dataset name from
the module name and finds README.md / CITATIONS.bib through the `<name>`
namespace package. Set `TFCXR_DATASETS_DIR` when the builders live elsewhere
(e.g. a non-editable install).
"""

import contextlib
import importlib
import logging
import os
import pathlib
import sys

logger = logging.getLogger(__name__)

DATASETS_DIR = pathlib.Path(
    os.environ.get("TFCXR_DATASETS_DIR", pathlib.Path(__file__).resolve().parents[1] / "datasets")
)
BUILDERS = ("nih_cxr14", "cxr_lung_masks")


def builder_path(name, datasets_dir=None):
    """Path of `<datasets_dir>/<name>/<name>_dataset_builder.py`."""
    return pathlib.Path(datasets_dir or DATASETS_DIR) / name / f"{name}_dataset_builder.py"


@contextlib.contextmanager
def _on_sys_path(folder):
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def register(name, datasets_dir=None):
    """Import one builder module by path so that TFDS registers its `Builder` class.

    Idempotent: a module imported before (under the same name) is reused.

    Args:
        name: dataset name, e.g. "nih_cxr14".
        datasets_dir: folder holding `<name>/`; default `DATASETS_DIR`.

    Returns:
        The `Builder` class (a `tfds.core.GeneratorBasedBuilder`).

    Raises:
        FileNotFoundError: no builder module at the expected path.
    """
    module_name = f"{name}.{name}_dataset_builder"
    if module_name not in sys.modules:
        path = builder_path(name, datasets_dir)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: TFDS builder for {name!r} not found (set TFCXR_DATASETS_DIR)")
        with _on_sys_path(path.parents[1]):
            importlib.import_module(module_name)
    return sys.modules[module_name].Builder


def register_all(datasets_dir=None):
    """Register every builder in `BUILDERS` whose module exists; returns {name: Builder}."""
    registered = {}
    for name in BUILDERS:
        if builder_path(name, datasets_dir).is_file():
            registered[name] = register(name, datasets_dir)
        else:
            logger.warning("TFDS builder %r not found at %s", name, builder_path(name, datasets_dir))
    return registered


REGISTERED = register_all()
