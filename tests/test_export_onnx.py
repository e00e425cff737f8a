"""ONNX export (tfcxr.export.onnx; tf2onnx, opset >= 17): graph, metadata and parity with the SavedModel.

The onnxruntime predictor is tested in test_serving_onnx_predictor.py."""

import numpy as np
import pytest
import tensorflow as tf

import export_helpers as H
from permission_helpers import mode, not_shared
from tfcxr.export import onnx as export_onnx_module
from tfcxr.export.savedmodel import run_savedmodel
from tfcxr.labels import TARGETS


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return H.export_tiny_onnx(tmp_path_factory.mktemp("onnx"), mask="loose")


def test_onnx_graph_and_metadata(exported):
    import onnx

    _, _, onnx_path, _, _ = exported
    model = onnx.load(str(onnx_path))
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in model.graph.input] == ["images"]
    assert sorted(o.name for o in model.graph.output) == ["no_finding", "probabilities"]
    meta = export_onnx_module.read_metadata(onnx_path)
    assert meta["mask"] == "loose" and meta["image_size"] == H.TINY_SIZE and meta["labels"] == list(TARGETS)


def test_onnx_parity_with_savedmodel_float_signature(exported):
    _, version_dir, onnx_path, _, _ = exported
    images = np.random.default_rng(1).random((5, H.TINY_SIZE, H.TINY_SIZE, 1), np.float32)
    diff = export_onnx_module.max_abs_diff(
        export_onnx_module.run_onnx(onnx_path, images), run_savedmodel(version_dir, images=images)
    )
    assert diff["probabilities"] < 1e-4 and diff["no_finding"] < 1e-4, diff


def test_opset_below_17_is_refused(exported):
    from tfcxr.export.savedmodel import load_classifier, read_run

    run = exported[0]
    info = read_run(run)
    with pytest.raises(ValueError, match="opset=13"):
        export_onnx_module.convert(load_classifier(info), info, opset=13)


def test_cli_onnx_with_parity_check(tmp_path, capsys, umask):
    from tfcxr.export.__main__ import main

    umask(0o022)
    run = H.write_run(tmp_path / "run")
    assert main([str(run), "--format", "onnx", "--out", str(tmp_path / "out"), "--model-name", "m"]) == 0
    assert capsys.readouterr().out.strip().endswith("m.onnx")
    assert tf.io.gfile.exists(str(tmp_path / "out" / "m.onnx"))
    assert mode(tmp_path / "out" / "m.onnx") == 0o644 and not_shared(tmp_path / "out") == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.onnx"]  # no temporary left behind


def test_tfcxr_tiny_classifier_exports_with_parity(tmp_path):
    """The real classifier (tfcxr.models, custom preprocessor layer) through SavedModel and ONNX."""
    from tfcxr.models import build_classifier

    model = build_classifier("tiny", 32, weights="none")
    run = H.write_run(tmp_path / "run", model=model, backbone="tiny")
    from tfcxr.export.savedmodel import export_savedmodel

    version_dir = export_savedmodel(run, tmp_path / "models")
    onnx_path = export_onnx_module.export_onnx(run, tmp_path / "onnx")
    images = np.random.default_rng(2).random((4, 32, 32, 1), np.float32)
    reference = run_savedmodel(version_dir, images=images)
    np.testing.assert_allclose(reference["probabilities"], model(images), atol=1e-5)
    diff = export_onnx_module.max_abs_diff(export_onnx_module.run_onnx(onnx_path, images), reference)
    assert max(diff.values()) < 1e-4, diff
