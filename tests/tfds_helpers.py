"""Shared helpers of the TFDS builder tests: load a builder folder's module, run the real `tfds build` CLI."""

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_module(name, path):
    """Import the Python file `path` as module `name` once (builder folders are not packages)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_tfds_build(builder_dir, manual_dir, data_dir):
    """Run `tfds build BUILDER_DIR --manual_dir M --data_dir D` in a subprocess; returns the CompletedProcess.

    The `tfds` script beside this interpreter is used (the dev extra installs apache-beam and mlcroissant, which
    its entry point imports); the repository is on PYTHONPATH so the builder can import tfcxr.
    """
    tfds_cli = shutil.which("tfds", path=str(pathlib.Path(sys.executable).parent))
    assert tfds_cli, f"no `tfds` script beside {sys.executable}: install tfcxr[dev]"
    command = [tfds_cli, "build", str(builder_dir), "--manual_dir", str(manual_dir), "--data_dir", str(data_dir)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def load_builder_folder(builder_dir, name: str, test_class: str):
    """(make_dummy_data, the DatasetBuilderTestCase class) of a folder-style builder ``datasets/<name>``."""
    builder_dir = pathlib.Path(builder_dir)
    make_dummy_data = load_module(f"{name}_make_dummy_data", builder_dir / "make_dummy_data.py").make_dummy_data
    test_module = load_module(f"{name}_dataset_builder_test", builder_dir / f"{name}_dataset_builder_test.py")
    return make_dummy_data, getattr(test_module, test_class)


def file_listing(root) -> list[str]:
    """Sorted relative paths of every file under `root`."""
    root = pathlib.Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
