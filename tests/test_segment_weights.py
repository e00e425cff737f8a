"""Tests of ``tfcxr.segment.weights``: assigning PyTorch- and TF-layout state dicts to a tiny LiteMedSAM."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tfcxr.segment import load_segmenter  # noqa: E402
from tfcxr.segment import weights as W  # noqa: E402
from tfcxr.segment.torch_checkpoint import read_torch_state_dict  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return load_segmenter("tiny")


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



def test_reader_matches_torch_save_and_pth_loading(tiny, tmp_path):
    torch = pytest.importorskip("torch")

    state = {k: torch.from_numpy(v + 0.5) for k, v in _pytorch_layout_state(tiny).items()}
    state["image_encoder.patch_embed.seq.0.bn.num_batches_tracked"] = torch.tensor(7)
    state["image_encoder.layers.1.blocks.0.attn.attention_biases"] = state[
        "image_encoder.layers.1.blocks.0.attn.attention_biases"].t().contiguous().t()  # non-contiguous view
    key = "image_encoder.layers.1.blocks.0.attn.attention_bias_idxs"  # a derived buffer: optional, verified
    state[key] = torch.from_numpy(tiny.buffer_map()[key].astype(np.int64))
    torch.save({"model": state}, tmp_path / "ckpt.pth")
    read = read_torch_state_dict(tmp_path / "ckpt.pth")
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

