"""The TF Serving layout (tfcxr.export.serving_layout): model names, version folders, staging and models.config."""

import pytest

from tfcxr.export import serving_layout


def _version(out, name, version, complete=True):
    """Make <out>/<name>/<version>/ (with a saved_model.pb when `complete`); return the folder."""
    folder = out / name / str(version)
    folder.mkdir(parents=True)
    if complete:
        (folder / "saved_model.pb").write_bytes(b"")
    return folder


@pytest.mark.parametrize("name", ["tfcxr", "cxr-v2", "A.b_1", "7"])
def test_valid_model_names_are_returned(name):
    assert serving_layout.check_model_name(name) == name


@pytest.mark.parametrize("name", ["", "bad name", "a/b", "-lead", ".hidden", "../up", None, 3])
def test_invalid_model_names_are_refused_with_the_value(name):
    with pytest.raises(ValueError, match=f"model_name={name!r}".replace(".", r"\.")):
        serving_layout.check_model_name(name)


def test_versions_count_only_complete_numeric_folders(tmp_path):
    assert serving_layout.versions(tmp_path / "missing") == []
    for version in (10, 2):
        _version(tmp_path, "m", version)
    _version(tmp_path, "m", 5, complete=False)  # being written (or broken): TF Serving would fail on it
    (tmp_path / "m" / ".3.abc.tmp").mkdir()
    (tmp_path / "m" / "latest").mkdir()
    assert serving_layout.versions(tmp_path / "m") == [2, 10]


def test_resolve_version_picks_the_next_or_checks_the_given_one(tmp_path):
    assert serving_layout.resolve_version(tmp_path, "m") == 1
    _version(tmp_path, "m", 3)
    _version(tmp_path, "m", 4, complete=False)  # an incomplete folder still blocks its number
    assert serving_layout.resolve_version(tmp_path, "m") == 5
    assert serving_layout.resolve_version(tmp_path, "m", 2) == 2
    with pytest.raises(FileExistsError, match="version 3 already exists"):
        serving_layout.resolve_version(tmp_path, "m", 3)
    with pytest.raises(ValueError, match="version=0"):
        serving_layout.resolve_version(tmp_path, "m", 0)
    with pytest.raises(ValueError, match="model_name='a b'"):
        serving_layout.resolve_version(tmp_path, "a b")


def test_staging_is_hidden_beside_the_version_and_published_atomically(tmp_path):
    staging = serving_layout.staging_dir(tmp_path, "m", 1)
    assert staging.parent == tmp_path / "m" and staging.name.startswith(".") and list(staging.iterdir()) == []
    assert serving_layout.versions(tmp_path / "m") == []  # TF Serving ignores it while it is written
    (staging / "saved_model.pb").write_bytes(b"pb")
    target = serving_layout.publish_version(staging, tmp_path, "m", 1)
    assert target == tmp_path / "m" / "1" and (target / "saved_model.pb").read_bytes() == b"pb"
    assert not staging.exists()
    assert 'name: "m"' in (tmp_path / serving_layout.MODELS_CONFIG).read_text()
    again = serving_layout.staging_dir(tmp_path, "m", 1)
    with pytest.raises(FileExistsError, match="version 1 already exists"):
        serving_layout.publish_version(again, tmp_path, "m", 1)
    assert again.is_dir()  # the refused staging folder is left for the caller to remove


def test_models_config_lists_served_models_sorted(tmp_path):
    text = serving_layout.models_config_text(["b", "a"], base_path="/srv/models/")
    assert text.startswith("model_config_list {\n") and text.endswith("}\n")
    assert text.index('name: "a"') < text.index('name: "b"')
    assert 'base_path: "/srv/models/a"' in text and text.count('model_platform: "tensorflow"') == 2
    assert serving_layout.models_config_text([]) == "model_config_list {\n}\n"
    with pytest.raises(ValueError, match="model_name='x y'"):
        serving_layout.models_config_text(["x y"])
    _version(tmp_path, "served", 1)
    _version(tmp_path, "half", 1, complete=False)
    (tmp_path / "notes.txt").write_text("not a model")
    path = serving_layout.write_models_config(tmp_path)
    assert path == tmp_path / "models.config"
    assert path.read_text() == serving_layout.models_config_text(["served"])  # default base_path /models
