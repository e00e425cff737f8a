"""Shared pytest fixtures: real-data locations and markers."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The real data sets (nih_cxr14_384, lungs_v7_covid, ...; docs/results.md): $TFCXR_DATA, else <repo>/data.
REAL_DATA = pathlib.Path(os.environ.get("TFCXR_DATA", REPO_ROOT / "data"))


def pytest_configure(config):
    config.addinivalue_line("markers", "real_data: needs the real data sets ($TFCXR_DATA); skipped when absent")
    config.addinivalue_line("markers", "gpu: needs a GPU; skipped on CPU")
    config.addinivalue_line("markers", "slow: slower than a few seconds on CPU")


@pytest.fixture(scope="session")
def shared_data():
    """Path to the real data sets ($TFCXR_DATA or <repo>/data), or skip the test when they are absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not found at {REAL_DATA} (set TFCXR_DATA)")
    return REAL_DATA


@pytest.fixture
def umask():
    """Call ``umask(0o022)`` to set the process umask for this test; the previous umask is restored afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)
