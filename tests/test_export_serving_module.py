"""The exported serving graph (tfcxr.export.serving_module): both signatures, their declared shapes, parity with
the training pipeline, bad requests, the embedded segmenter and its CXR gate."""

import pathlib
import types

import numpy as np
import pytest
import tensorflow as tf

import export_helpers as H
from tfcxr.export import savedmodel, serving_module
from tfcxr.labels import TARGETS


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    folder = tmp_path_factory.mktemp("original")
    run, version_dir = H.export_tiny(folder)
    images, _ = H.write_images(folder / "data", 3)
    return run, version_dir, tf.saved_model.load(str(version_dir)), images


@pytest.fixture(scope="module")
def loose(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loose")
    run, version_dir = H.export_tiny(folder, mask="loose")
    images, masks = H.write_images(folder / "data", 3, with_masks=True)
    return run, version_dir, tf.saved_model.load(str(version_dir)), images, masks


def test_input_specs_and_gating_follow_the_run():
    original = savedmodel.RunInfo(pathlib.Path("run"), pathlib.Path("run/best.keras"), image_size=32)
    loose = savedmodel.RunInfo(pathlib.Path("run"), pathlib.Path("run/best.keras"), image_size=32, mask="loose")
    gated, ungated = types.SimpleNamespace(gate=object()), types.SimpleNamespace(gate=None)
    assert serving_module.images_spec(32).shape.as_list() == [None, 32, 32, 1]
    assert [s.name for s in serving_module.bytes_specs(original)] == ["image_bytes"]
    assert [s.name for s in serving_module.bytes_specs(loose)] == ["image_bytes", "mask_bytes"]
    assert [s.name for s in serving_module.bytes_specs(loose, gated)] == ["image_bytes"]  # the segmenter masks
    assert serving_module.is_gated(loose, gated)
    assert not serving_module.is_gated(loose, ungated) and not serving_module.is_gated(original, gated)
    with pytest.raises(ValueError, match="nothing to segment"):
        serving_module.build_serving_module(None, original, segmenter=gated)


def _bytes(paths):
    return tf.constant([p.read_bytes() for p in paths])


def _signature_shapes(signature):
    """{name: (shape as a tuple, dtype name)} of a loaded signature's inputs and outputs."""
    specs = {**signature.structured_input_signature[1], **signature.structured_outputs}
    return {name: (tuple(spec.shape.as_list()), spec.dtype.name) for name, spec in specs.items()}


def _signature_def_shapes(version_dir, signature_name):
    """The same read from ``saved_model.pb``'s SignatureDef, which is what TF Serving's metadata reports."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    signature = proto.meta_graphs[0].signature_def[signature_name]
    infos = {**signature.inputs, **signature.outputs}
    shape = lambda info: tuple(None if d.size == -1 else d.size for d in info.tensor_shape.dim)  # noqa: E731
    return {name: (shape(info), tf.dtypes.as_dtype(info.dtype).name) for name, info in infos.items()}


OUTPUTS = {"probabilities": ((None, 5), "float32"), "no_finding": ((None,), "float32"), "labels": ((None, 5), "string")}


@pytest.mark.parametrize("fixture", ["original", "loose"])
def test_signatures_declare_static_shapes_and_dtypes(fixture, request):
    version_dir, loaded = request.getfixturevalue(fixture)[1:3]
    size = H.TINY_SIZE
    bytes_inputs = {"image_bytes": ((None,), "string")}
    if fixture == "loose":
        bytes_inputs["mask_bytes"] = ((None,), "string")
    expected = {
        "predict_images": {"images": ((None, size, size, 1), "float32"), **OUTPUTS},
        "serving_default": {**bytes_inputs, **OUTPUTS},
    }
    for name, shapes in expected.items():
        assert _signature_shapes(loaded.signatures[name]) == shapes, name
        assert _signature_def_shapes(version_dir, name) == shapes, name


def test_bytes_signature_outputs_and_formats(original):
    _, _, loaded, images = original
    png16 = H.png_bytes((H.xray_like(40, 48).astype(np.uint16) * 257))
    batch = tf.constant([images[0].read_bytes(), H.jpeg_bytes(H.xray_like(50, 30)), png16])
    out = loaded.signatures["serving_default"](image_bytes=batch)
    assert out["probabilities"].shape == (3, 5) and out["probabilities"].dtype == tf.float32
    assert out["no_finding"].shape == (3,)
    assert out["labels"].shape == (3, 5)
    assert [s.decode() for s in out["labels"][0].numpy()] == list(TARGETS)
    np.testing.assert_allclose(out["no_finding"], 1 - out["probabilities"].numpy().max(-1), atol=1e-6)
    # 16-bit PNG v*257 decodes to the same [0, 1] image as the 8-bit original.
    np.testing.assert_allclose(out["probabilities"][2], out["probabilities"][0], atol=1e-5)


def test_bytes_signature_matches_training_pipeline(original):
    from tfcxr.data.image_ops import load_and_mask
    from tfcxr.data.pipeline import PipelineConfig

    _, _, loaded, images = original
    config = PipelineConfig(data="", mask="original", image_size=H.TINY_SIZE)
    x = tf.stack([load_and_mask(tf.constant(str(p)), tf.constant(""), config) for p in images])
    via_floats = loaded.signatures["predict_images"](images=x)
    via_bytes = loaded.signatures["serving_default"](image_bytes=_bytes(images))
    np.testing.assert_allclose(via_bytes["probabilities"], via_floats["probabilities"], atol=1e-6)


def test_masked_run_takes_mask_bytes_and_matches_pipeline(loose):
    from tfcxr.data.image_ops import load_and_mask
    from tfcxr.data.pipeline import PipelineConfig

    _, version_dir, loaded, images, masks = loose
    signature = loaded.signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"image_bytes", "mask_bytes"}
    out = signature(image_bytes=_bytes(images), mask_bytes=_bytes(masks))
    config = PipelineConfig(data="", masks="m", mask="loose", image_size=H.TINY_SIZE)
    x = tf.stack([load_and_mask(tf.constant(str(p)), tf.constant(str(m)), config) for p, m in zip(images, masks)])
    expected = loaded.signatures["predict_images"](images=x)
    np.testing.assert_allclose(out["probabilities"], expected["probabilities"], atol=1e-6)
    # The mask matters: an all-lung mask gives other probabilities.
    full = tf.constant([H.png_bytes(np.full((40, 48), 255, np.uint8))] * 3)
    other = signature(image_bytes=_bytes(images), mask_bytes=full)
    assert np.abs(other["probabilities"].numpy() - out["probabilities"].numpy()).max() > 1e-6
    assert savedmodel.read_export_info(version_dir)["signatures"]["serving_default"] == ["image_bytes", "mask_bytes"]


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("not_an_image", "neither PNG nor JPEG"),
        ("empty_batch", "empty batch"),
        ("images_wrong_rank", "must be \\(batch, 32, 32, 1\\)"),
        ("images_wrong_size", "must be \\(batch, 32, 32, 1\\)"),
        ("images_empty", "empty batch"),
    ],
)
def test_bad_requests_fail_clearly_and_model_keeps_serving(original, case, pattern):
    _, _, loaded, images = original
    serve, floats = loaded.signatures["serving_default"], loaded.signatures["predict_images"]
    calls = {
        "not_an_image": lambda: serve(image_bytes=tf.constant([images[0].read_bytes(), b"<html>not an image"])),
        "empty_batch": lambda: serve(image_bytes=tf.constant([], tf.string)),
        "images_wrong_rank": lambda: floats(images=tf.zeros([32, 32, 1])),
        "images_wrong_size": lambda: floats(images=tf.zeros([2, 16, 16, 1])),
        "images_empty": lambda: floats(images=tf.zeros([0, 32, 32, 1])),
    }
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        calls[case]()
    assert serve(image_bytes=_bytes(images[:2]))["probabilities"].shape == (2, 5)
    assert floats(images=tf.zeros([1, 32, 32, 1]))["probabilities"].shape == (1, 5)


def test_mask_of_wrong_size_fails_clearly(loose):
    _, _, loaded, images, masks = loose
    serve = loaded.signatures["serving_default"]
    small = tf.constant([H.png_bytes(H.lung_mask(20, 20))])
    with pytest.raises(tf.errors.InvalidArgumentError, match="must have the size of its image"):
        serve(image_bytes=_bytes(images[:1]), mask_bytes=small)
    assert serve(image_bytes=_bytes(images[:1]), mask_bytes=_bytes(masks[:1]))["probabilities"].shape == (1, 5)


@pytest.mark.slow
def test_embedded_segmenter_serves_raw_xrays(tmp_path):
    from tfcxr.export.savedmodel import read_run
    from tfcxr.export.segmenter import load_serving_segmenter

    segmenter = load_serving_segmenter("tiny")
    run, version_dir = H.export_tiny(tmp_path, mask="loose", segmenter=segmenter)
    loaded = tf.saved_model.load(str(version_dir))
    signature = loaded.signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["image_bytes"]
    images, _ = H.write_images(tmp_path / "data", 2, size=(40, 48))
    out = signature(image_bytes=_bytes(images))
    assert out["probabilities"].shape == (2, 5)
    info = read_run(run)
    x = tf.stack([serving_module.prepare_image(tf.constant(p.read_bytes()), info, segmenter=segmenter) for p in images])
    expected = loaded.signatures["predict_images"](images=x)
    np.testing.assert_allclose(out["probabilities"], expected["probabilities"], atol=1e-5)
    assert savedmodel.read_export_info(version_dir)["embed_segmenter"] is True


def test_savedmodel_is_self_contained(original):
    """TF Serving has no Python: the export must load and run with tfcxr and keras unavailable."""
    import subprocess
    import sys

    _, version_dir, _, images = original
    code = (
        "import sys; sys.modules['tfcxr'] = None; sys.modules['keras'] = None\n"
        "import tensorflow as tf\n"
        f"m = tf.saved_model.load({str(version_dir)!r})\n"
        f"out = m.signatures['serving_default'](image_bytes=tf.constant([open({str(images[0])!r}, 'rb').read()]))\n"
        "print(out['probabilities'].shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 5)" in result.stdout


@pytest.mark.slow
def test_embedded_gate_scores_and_rejects_non_cxr_inputs(tmp_path):
    from tfcxr.segment import gate, load_segmenter
    from tfcxr.export.segmenter import _serving_segmenter_class

    model = load_segmenter("tiny")
    rng = np.random.default_rng(0)
    features = 32 * gate.GRID * gate.GRID  # the tiny encoder's pooled features
    model.gate = gate.fit_gate(rng.normal(0, 1, (40, features)), rng.normal(2, 1, (40, features)), components=8)
    images, _ = H.write_images(tmp_path / "data", 2, size=(40, 48))
    decoded = [tf.image.decode_png(p.read_bytes(), channels=1) for p in images]
    scores = [float(model.gate.score(model.embed(model.preprocess(tf.cast(d, tf.float32)[None] / 255.0)[0]))[0])
              for d in decoded]
    assert scores[0] != scores[1]
    model.gate.threshold = np.float32(sum(scores) / 2)  # one image passes, the other does not
    segmenter = _serving_segmenter_class()(model, reject_non_cxr=True)
    _, version_dir = H.export_tiny(tmp_path, mask="loose", segmenter=segmenter)
    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    assert signature.structured_outputs["in_distribution"].shape.as_list() == [None]
    passing = int(np.argmax(scores))
    out = signature(image_bytes=_bytes([images[passing]]))
    np.testing.assert_allclose(out["in_distribution"].numpy(), [scores[passing]], atol=1e-4)
    assert out["is_cxr"].numpy().tolist() == [True]
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a frontal chest X-ray"):
        signature(image_bytes=_bytes(images))
    info = savedmodel.read_export_info(version_dir)["cxr_gate"]
    assert info["reject_non_cxr"] is True and info["threshold"] == pytest.approx(sum(scores) / 2)
    with pytest.raises(ValueError, match="has no CXR gate"):
        _serving_segmenter_class()(load_segmenter("tiny"), reject_non_cxr=True)
