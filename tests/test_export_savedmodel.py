"""SavedModel export (tfcxr.export.savedmodel): reading the run, float32 classifiers, the TF Serving layout, the
metadata and the CLI. The served signatures are tested in test_export_serving_module.py."""

import json

import numpy as np
import pytest

import export_helpers as H
from permission_helpers import mode, not_shared
from tfcxr.export import savedmodel, serving_layout
from tfcxr.labels import TARGETS


def test_layout_and_models_config(tmp_path, umask):
    umask(0o022)
    run, version_dir = H.export_tiny(tmp_path / "tiny")
    assert version_dir.name == "1" and version_dir.parent.name == "tfcxr"
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()
    config = (version_dir.parent.parent / "models.config").read_text()
    assert 'name: "tfcxr"' in config and 'base_path: "/models/tfcxr"' in config
    info = savedmodel.read_export_info(version_dir)
    assert info["labels"] == list(TARGETS) and info["signatures"]["serving_default"] == ["image_bytes"]
    # Versions increment, an existing version is refused, models.config lists every model.
    out = tmp_path / "models"
    assert savedmodel.export_savedmodel(run, out, "a").name == "1"
    assert savedmodel.export_savedmodel(run, out, "a").name == "2"
    assert savedmodel.export_savedmodel(run, out, "b", version=7).name == "7"
    with pytest.raises(FileExistsError, match="version 7 already exists"):
        savedmodel.export_savedmodel(run, out, "b", version=7)
    text = (out / "models.config").read_text()
    assert text.count("config {") == 2 and 'base_path: "/models/b"' in text
    assert not [p for p in (out / "a").iterdir() if p.name.startswith(".")]  # no staging left behind
    assert not_shared(out) == []  # TF Serving (another user) can read every file and folder
    assert mode(out / "a" / "2") == 0o755 and mode(out / "models.config") == 0o644
    with pytest.raises(ValueError, match="model_name="):
        serving_layout.check_model_name("bad name/")


def test_read_run_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        savedmodel.read_run(tmp_path)
    run = H.write_run(tmp_path / "run", mask="lose")
    with pytest.raises(ValueError, match="config.yaml.*mask='lose'"):
        savedmodel.read_run(run)


def test_nested_config_and_mixed_precision_model_export_as_float32(tmp_path):
    import keras
    import yaml

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = H.tiny_classifier()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    run = H.write_run(tmp_path / "run", model=model)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"backbone": "tiny", "image_size": 32},
                                                     "data": {"mask": "original"}}))
    info = savedmodel.read_run(run)
    assert info.image_size == 32 and info.backbone == "tiny"
    float_model = savedmodel.load_classifier(info)
    assert all(layer.dtype_policy.compute_dtype == "float32" for layer in float_model.layers)
    x = np.random.default_rng(0).random((2, 32, 32, 1), np.float32)
    np.testing.assert_allclose(float_model(x), model(x), atol=2e-3)


def test_cli_savedmodel(tmp_path, capsys):
    from tfcxr.export.__main__ import main

    run = H.write_run(tmp_path / "run")
    assert main([str(run), "--format", "savedmodel", "--out", str(tmp_path / "out"), "--model-name", "cxr",
                 "--version", "3"]) == 0
    assert capsys.readouterr().out.strip().endswith("cxr/3")
    assert json.loads((tmp_path / "out/cxr/3/assets.extra/tfcxr_export.json").read_text())["version"] == 3
