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
