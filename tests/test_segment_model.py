"""Fast tests of tfcxr.segment's model interface on tiny random configs (no real weights needed)."""

import json
import os
import pickle
import zipfile

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tfcxr.segment import load_segmenter  # noqa: E402
from tfcxr.segment import weights as W  # noqa: E402

BOXES = np.asarray([[[4.0, 4.0, 30.0, 60.0], [34.0, 4.0, 60.0, 60.0]]], np.float32)  # (1, 2, 4) in 64-space


@pytest.fixture(scope="module")
def tiny():
    return load_segmenter("tiny")


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory):
    from transformers import TFSamModel

    from tfcxr.segment.model import float32_policy
    from tfcxr.segment.sam import tiny_sam_config

    directory = tmp_path_factory.mktemp("tiny_sam")
    with float32_policy():
        hf = TFSamModel(tiny_sam_config(64))
        hf(pixel_values=tf.zeros((1, 3, 64, 64)), input_boxes=tf.constant(BOXES), multimask_output=False)
    hf.save_pretrained(str(directory))
    return directory


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((h, w, 1)).astype(np.float32)


def test_tiny_shapes_and_sizes(tiny):
    assert (tiny.image_size, tiny.embedding_size, tiny.kind) == (64, 16, "litemedsam")
    pixel_values, sizes = tiny.preprocess(np.stack([_image(50, 40), _image(50, 40, 1)]))
    assert pixel_values.shape == (2, 64, 64, 3) and pixel_values.dtype == tf.float32
    np.testing.assert_array_equal(sizes.numpy(), [[50, 40, 64, 51]] * 2)
    # resized region min-max normalised to [0, 1], padding (right of column 51) is zero
    assert float(tf.reduce_min(pixel_values[:, :, :51])) == 0.0 and float(tf.reduce_max(pixel_values)) == 1.0
    assert float(tf.reduce_max(tf.abs(pixel_values[:, :, 51:]))) == 0.0
    embeddings = tiny.embed(pixel_values)
    assert embeddings.shape == (2, 32, 16, 16)
    logits = tiny.decode(embeddings, np.repeat(BOXES, 2, axis=0))
    assert logits.shape == (2, 2, 64, 64) and logits.dtype == tf.float32
    assert tiny.postprocess(logits, sizes).shape == (2, 2, 50, 40)
    np.testing.assert_allclose(tiny(pixel_values, np.repeat(BOXES, 2, axis=0)).numpy(), logits.numpy(), atol=1e-5)


def test_preprocess_list_of_sizes(tiny):
    pixel_values, sizes = tiny.preprocess([_image(32, 64), _image(80, 20)])
    assert pixel_values.shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(sizes.numpy(), [[32, 64, 32, 64], [80, 20, 64, 16]])
    with pytest.raises(ValueError, match="images"):
        tiny.preprocess(np.zeros((2, 3), np.float32))


def test_postprocess_maps_padded_input_back_to_the_original(tiny):
    """A non-square image, preprocessed (resize + pad), read back as 'logits', returns to its own size."""
    h, w = 48, 80
    yy, xx = np.mgrid[0:h, 0:w]
    image = ((xx < w // 3) | (yy > 2 * h // 3)).astype(np.float32)[..., None]  # (48, 80, 1) in {0, 1}
    pixel_values, sizes = tiny.preprocess(image[None])
    np.testing.assert_array_equal(sizes.numpy(), [[48, 80, 38, 64]])
    logits = pixel_values[..., :1] * 2.0 - 1.0  # (1, 64, 64, 1): +1 on the pattern, -1 elsewhere and in padding
    back = tiny.postprocess(tf.transpose(logits, (0, 3, 1, 2)), sizes).numpy()[0, 0]
    assert back.shape == (h, w)
    assert np.mean((back > 0) == (image[..., 0] > 0.5)) > 0.97


def test_normalized_and_original_boxes(tiny):
    _, sizes = tiny.preprocess(_image(50, 100)[None])  # resized to (32, 64)
    norm = tiny.normalized_to_input_boxes([[[0.0, 0.0, 1.0, 0.5]]], sizes).numpy()
    np.testing.assert_allclose(norm, [[[0, 0, 64, 16]]])
    orig = tiny.original_to_input_boxes([[[10.0, 10.0, 100.0, 50.0]]], sizes).numpy()
    np.testing.assert_allclose(orig, [[[6.4, 6.4, 64, 32]]], rtol=1e-6)


def test_tf_function_pipeline_matches_eager(tiny):
    images = np.stack([_image(40, 56, 2), _image(40, 56, 3)])

    def pipeline(images):
        pixel_values, sizes = tiny.preprocess(images)
        norm = tf.tile(tf.constant([[[0.1, 0.1, 0.45, 0.9], [0.55, 0.1, 0.9, 0.9]]]), [tf.shape(images)[0], 1, 1])
        logits = tiny.decode(tiny.embed(pixel_values), tiny.normalized_to_input_boxes(norm, sizes))
        return tiny.postprocess(logits, sizes)

    graph = tf.function(pipeline, input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
    out = graph(images)
    assert out.shape == (2, 2, 40, 56)
    np.testing.assert_allclose(out.numpy(), pipeline(images).numpy(), atol=1e-4)


def test_save_load_round_trip(tmp_path):
    from tfcxr.segment.prompts import InferenceSettings

    model = load_segmenter("tiny")
    model.priors = np.asarray([[0.1, 0.1, 0.45, 0.9], [0.55, 0.12, 0.9, 0.88]], np.float32)
    model.inference = InferenceSettings(prompt="prior", refine_rounds=2, margin=0.03, threshold=-0.5)
    model.mask_definition = {"name": "classic", "description": "visible lung fields"}
    pixel_values, _ = model.preprocess(_image(64, 64)[None])
    expected = model(pixel_values, BOXES).numpy()
    model.save(tmp_path / "seg", extra={"provenance": {"seed": 3}})
    meta = json.loads((tmp_path / "seg" / "segmenter.json").read_text())
    assert meta["kind"] == "litemedsam" and meta["version"] == 2 and meta["weights"]["file"] == "weights.npz"
    assert len(meta["weights"]["sha256"]) == 64 and meta["provenance"] == {"seed": 3}
    loaded = load_segmenter(str(tmp_path / "seg"))
    np.testing.assert_array_equal(loaded(pixel_values, BOXES).numpy(), expected)
    assert loaded.normalization == model.normalization and loaded.image_size == 64
    np.testing.assert_allclose(loaded.priors, model.priors, atol=1e-5)
    assert loaded.inference == model.inference and loaded.mask_definition == model.mask_definition
    assert loaded.source_dir == tmp_path / "seg"


def test_float16_weights_load_as_float32_close_to_the_original(tiny, tmp_path):
    from tfcxr.segment.weights import export_weights

    tiny.save(tmp_path / "half", weights_dtype="float16")
    with np.load(tmp_path / "half" / "weights.npz") as stored:
        assert {stored[k].dtype for k in stored.files if stored[k].dtype.kind == "f"} == {np.dtype("float16")}
    loaded = export_weights(load_segmenter(str(tmp_path / "half")).weight_map())
    for key, value in export_weights(tiny.weight_map()).items():
        assert loaded[key].dtype == np.float32
        np.testing.assert_allclose(loaded[key], value, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="weights_dtype"):
        tiny.save(tmp_path / "bad", weights_dtype="int8")


def test_corrupt_or_mismatched_weights_are_refused(tiny, tmp_path):
    from tfcxr.segment.weights import WeightsError

    tiny.save(tmp_path / "seg")
    weights_path = tmp_path / "seg" / "weights.npz"
    data = bytearray(weights_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights_path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"weights\.npz: sha256 mismatch"):
        load_segmenter(str(tmp_path / "seg"))
    meta_path = tmp_path / "seg" / "segmenter.json"
    meta = json.loads(meta_path.read_text())
    for bad, match in (({**meta, "weights": {"file": "../weights.npz"}}, "inside the directory"),
                       ({**meta, "version": 9}, "unsupported version"),
                       ({**meta, "priors": [[0, 0, 1]]}, "priors"),
                       ({**meta, "inference": {"prompt": "gt"}}, "inference")):
        meta_path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=match):
            load_segmenter(str(tmp_path / "seg"))
    meta_path.write_text("{not json")
    with pytest.raises(ValueError, match="segmenter.json: not a readable"):
        load_segmenter(str(tmp_path / "seg"))


def test_version_1_directory_reads_its_priors_file(tiny, tmp_path):
    from tfcxr.segment.weights import export_weights, save_npz_atomic

    directory = tmp_path / "v1"
    save_npz_atomic(directory / "weights.npz", export_weights(tiny.weight_map()))
    meta = {"format": "tfcxr-segmenter", "version": 1, "kind": "litemedsam", "name": "old", "image_size": 64,
            "normalization": {"mode": "minmax"}, "config": tiny.config.to_dict(), "weights": "weights.npz"}
    (directory / "segmenter.json").write_text(json.dumps(meta))
    (directory / "lung_priors.json").write_text(json.dumps({"boxes": [[0.1, 0.1, 0.4, 0.8], [0.6, 0.1, 0.9, 0.8]]}))
    loaded = load_segmenter(str(directory))
    np.testing.assert_allclose(loaded.priors, [[0.1, 0.1, 0.4, 0.8], [0.6, 0.1, 0.9, 0.8]])
    assert loaded.inference.prompt == "refine" and loaded.mask_definition["name"] == "unspecified"


def test_predict_contract(tiny):
    images = [_image(40, 56), _image(64, 48, 1)]
    for prompt in ("prior", [np.asarray([[2.0, 2.0, 20.0, 30.0]]), np.asarray([[0, 0, 47, 63], [5, 5, 20, 20]])]):
        masks = tiny.predict(images, prompt=prompt)
        assert [m.shape for m in masks] == [(40, 56), (64, 48)] and all(m.dtype == bool for m in masks)
    with pytest.raises(ValueError, match="one \\(B, 4\\) box array per image"):
        tiny.predict(images, prompt=[np.zeros((1, 4))])
    with pytest.raises(ValueError, match="prompt"):
        tiny.predict(images, prompt="lungs")


def test_gradients_reach_decoder_and_encoder(tiny):
    pixel_values, _ = tiny.preprocess(_image(64, 64)[None])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sigmoid(tiny(pixel_values, BOXES, training=True)))
    variables = tiny.mask_decoder.trainable_variables + tiny.image_encoder.trainable_variables
    grads = tape.gradient(loss, variables)
    # only the IoU head is unused with multimask_output=False
    assert {v.name for v, g in zip(variables, grads) if g is None} == {
        v.name for v in tiny.mask_decoder.iou_prediction_head.trainable_variables}
    assert len(tiny.prompt_encoder.trainable_variables) > 0
    assert not any(v is w for v in tiny.mask_decoder.trainable_variables for w in tiny.prompt_encoder.variables)


def test_stays_float32_under_mixed_precision():
    import tf_keras

    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = load_segmenter("litemedsam-tiny")
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    assert all(v.dtype == tf.float32 for v in model.variables)
    pixel_values, _ = model.preprocess(_image(64, 64)[None])
    assert model(pixel_values, BOXES).dtype == tf.float32


def test_wrong_shape_missing_and_unexpected_keys(tiny):
    state = W.export_weights(tiny.weight_map())
    key = "image_encoder.neck.0.weight"
    bad = dict(state, **{key: np.zeros((3, 3), np.float32)})
    message = r"image_encoder\.neck\.0\.weight: expected shape \(1, 1, 48, 32\), got \(3, 3\)"
    with pytest.raises(W.WeightsError, match=message):
        W.assign_weights(tiny.weight_map(), bad, "bad.npz", torch_layout=False)
    missing = {k: v for k, v in state.items() if k != key}
    with pytest.raises(W.WeightsError, match=r"bad\.npz.*1 missing keys \['image_encoder\.neck\.0\.weight'\]"):
        W.assign_weights(tiny.weight_map(), missing, "bad.npz", torch_layout=False)
    extra = dict(state, **{"mask_decoder.extra.weight": np.zeros(1, np.float32)})
    with pytest.raises(W.WeightsError, match=r"1 unexpected keys \['mask_decoder\.extra\.weight'\]"):
        W.assign_weights(tiny.weight_map(), extra, "bad.npz", torch_layout=False)
    # nothing was assigned by the failing calls
    after = W.export_weights(tiny.weight_map())
    assert all(np.array_equal(after[k], state[k]) for k in state)


def _pytorch_layout_state(model):
    from tfcxr.segment.weights import _PERMUTATIONS

    state = {}
    for key, var, layout in model.weight_map():
        perm = _PERMUTATIONS[layout]
        state[key] = np.ascontiguousarray(np.transpose(var.numpy(), np.argsort(perm)) if perm else var.numpy())
    return state


def test_torch_layout_shape_error_names_key_in_pytorch_layout(tiny):
    state = _pytorch_layout_state(tiny)
    state["image_encoder.neck.0.weight"] = np.zeros((32, 48, 3, 3), np.float32)
    message = r"image_encoder\.neck\.0\.weight: expected shape \(32, 48, 1, 1\), got \(32, 48, 3, 3\)$"
    with pytest.raises(W.WeightsError, match=message):
        W.assign_weights(tiny.weight_map(), state, "x.pth", torch_layout=True)


def test_restricted_reader_refuses_other_globals(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"x": os.getcwd}))
    with pytest.raises(W.WeightsError, match=r"evil\.pth.*refusing to load global '(posix|nt)\.getcwd'"):
        W.read_torch_state_dict(path)
    (tmp_path / "not_zip.pth").write_bytes(b"garbage")
    with pytest.raises(W.WeightsError, match="not_zip.pth: not a PyTorch zip checkpoint"):
        W.read_torch_state_dict(tmp_path / "not_zip.pth")


def test_reader_matches_torch_save_and_pth_loading(tiny, tmp_path):
    torch = pytest.importorskip("torch")

    state = {k: torch.from_numpy(v + 0.5) for k, v in _pytorch_layout_state(tiny).items()}
    state["image_encoder.patch_embed.seq.0.bn.num_batches_tracked"] = torch.tensor(7)
    state["image_encoder.layers.1.blocks.0.attn.attention_biases"] = state[
        "image_encoder.layers.1.blocks.0.attn.attention_biases"].t().contiguous().t()  # non-contiguous view
    key = "image_encoder.layers.1.blocks.0.attn.attention_bias_idxs"  # a derived buffer: optional, verified
    state[key] = torch.from_numpy(tiny.buffer_map()[key].astype(np.int64))
    torch.save({"model": state}, tmp_path / "ckpt.pth")
    read = W.read_torch_state_dict(tmp_path / "ckpt.pth")
    assert set(read) == set(state)
    for key in state:
        np.testing.assert_array_equal(read[key], state[key].numpy())
    model = load_segmenter("tiny")
    model.load_weights(tmp_path / "ckpt.pth")
    expected = W.export_weights(tiny.weight_map())
    got = W.export_weights(model.weight_map())
    assert all(np.allclose(got[k], expected[k] + 0.5) for k in expected)
    state[key] = state[key] + 1
    torch.save(state, tmp_path / "bad_buffer.pth")
    with pytest.raises(W.WeightsError, match=r"bad_buffer\.pth: buffers differ .*attention_bias_idxs"):
        model.load_weights(tmp_path / "bad_buffer.pth")


def test_hf_from_pretrained_path(tiny_hf_dir, tmp_path):
    model = load_segmenter(str(tiny_hf_dir))
    assert (model.kind, model.image_size, model.embedding_size) == ("hf_sam", 64, 4)
    assert model.normalization["mode"] == "meanstd"  # SAM default without a preprocessor config
    pixel_values, sizes = model.preprocess(_image(48, 64)[None])
    embeddings = model.embed(pixel_values)
    assert embeddings.shape == (1, 32, 4, 4)
    logits = model.decode(embeddings, BOXES)
    assert logits.shape == (1, 2, 16, 16)
    assert model.postprocess(logits, sizes).shape == (1, 2, 48, 64)
    model.save(tmp_path / "hf_seg")
    again = load_segmenter(str(tmp_path / "hf_seg"))
    np.testing.assert_allclose(again(pixel_values, BOXES).numpy(), model(pixel_values, BOXES).numpy(), atol=1e-6)


def test_hf_preprocessor_config_controls_normalization(tiny_hf_dir):
    (tiny_hf_dir / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    try:
        assert load_segmenter(str(tiny_hf_dir)).normalization == {"mode": "none"}
    finally:
        (tiny_hf_dir / "preprocessor_config.json").unlink()


def test_load_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: neither"):
        load_segmenter(str(tmp_path / "empty"))
    with pytest.raises(OSError, match="no/such-model"):
        load_segmenter("no/such-model")
    with pytest.raises(ValueError, match="Unknown segmenter preset 'litemedsam-lung'.*litemedsam-tiny"):
        load_segmenter("litemedsam-lung")
