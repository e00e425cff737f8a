"""tfcxr.datasets: registering the folder-style TFDS builders under datasets/ (register, register_all)."""

import sys

import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import tfcxr.datasets  # noqa: E402  (registers nih_cxr14 and cxr_lung_masks)

FAKE = "tfcxr_fake_cxr_ds"


@pytest.fixture
def fake_datasets(tmp_path):
    """A datasets folder with one fake builder module, `FAKE`; its modules are forgotten afterwards."""
    folder = tmp_path / "datasets"
    (folder / FAKE).mkdir(parents=True)
    yield folder
    for name in (FAKE, f"{FAKE}.{FAKE}_dataset_builder"):
        sys.modules.pop(name, None)


def test_registered_by_tfcxr_datasets(tmp_path, caplog):
    assert "nih_cxr14" in tfds.list_builders(with_community_datasets=False)
    assert tfcxr.datasets.register("nih_cxr14") is tfds.builder_cls("nih_cxr14")
    assert tfcxr.datasets.register_all(tmp_path) == {}  # no builders there: skipped with a warning
    assert "not found" in caplog.text


def test_import_registers_every_builder():
    assert set(tfcxr.datasets.REGISTERED) == set(tfcxr.datasets.BUILDERS) == {"nih_cxr14", "cxr_lung_masks"}
    for name, builder in tfcxr.datasets.REGISTERED.items():
        assert tfds.builder_cls(name) is builder
        assert tfcxr.datasets.builder_path(name).is_file()


def test_builder_path(tmp_path):
    assert tfcxr.datasets.builder_path("x", tmp_path) == tmp_path / "x" / "x_dataset_builder.py"
    expected = tfcxr.datasets.DATASETS_DIR / "nih_cxr14" / "nih_cxr14_dataset_builder.py"
    assert tfcxr.datasets.builder_path("nih_cxr14") == expected


def test_register_imports_by_path_once(fake_datasets, tmp_path):
    (fake_datasets / FAKE / f"{FAKE}_dataset_builder.py").write_text("class Builder:\n    pass\n")
    path_before = list(sys.path)
    builder = tfcxr.datasets.register(FAKE, fake_datasets)
    assert builder.__module__ == f"{FAKE}.{FAKE}_dataset_builder" and builder.__name__ == "Builder"
    assert sys.path == path_before  # datasets/ is on sys.path only during the import
    # A second call reuses the module imported before, wherever datasets_dir points now.
    assert tfcxr.datasets.register(FAKE, tmp_path / "elsewhere") is builder


def test_register_errors_name_the_path_and_leave_sys_path(fake_datasets):
    with pytest.raises(FileNotFoundError, match=r"nope_dataset_builder.py: TFDS builder for 'nope' not found "
                                                r"\(set TFCXR_DATASETS_DIR\)"):
        tfcxr.datasets.register("nope", fake_datasets)
    (fake_datasets / FAKE / f"{FAKE}_dataset_builder.py").write_text("raise RuntimeError('broken builder')\n")
    path_before = list(sys.path)
    with pytest.raises(RuntimeError, match="broken builder"):
        tfcxr.datasets.register(FAKE, fake_datasets)
    assert sys.path == path_before
    assert f"{FAKE}.{FAKE}_dataset_builder" not in sys.modules
