"""Tests for tfcxr.segment.tinyvit: the TinyViT image encoder of LiteMedSAM (config, layers, weight and buffer maps).

Parity with the PyTorch reference on the real checkpoint is in test_litemedsam_parity.py.
"""

import json
import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tfcxr.segment import tinyvit  # noqa: E402
from tfcxr.segment.litemedsam import ARCHITECTURES  # noqa: E402

TINY = ARCHITECTURES["litemedsam-tiny"].encoder  # 64 input, embed dims (16, 24, 32, 48), out 32


@pytest.fixture(scope="module")
def encoder():
    model = tinyvit.TinyViT(TINY, name="image_encoder")
    model(tf.zeros((1, 32, 32, 3)))
    return model


def test_config_checks_and_round_trip():
    with pytest.raises(ValueError, match="must all have 4 entries"):
        tinyvit.TinyViTConfig(depths=(2, 2, 6))
    with pytest.raises(ValueError, match="`image_size` must be a multiple of 4. Received: image_size=30"):
        tinyvit.TinyViTConfig(image_size=30)
    with pytest.raises(ValueError, match="embed dim 128 is not divisible by num_heads 3"):
        tinyvit.TinyViTConfig(num_heads=(2, 3, 5, 10))
    default = tinyvit.TinyViTConfig()
    assert (default.image_size, default.embedding_size, default.out_channels) == (256, 64, 256)
    for config in (default, TINY):
        as_dict = json.loads(json.dumps(config.to_dict()))  # JSON-safe: the segmenter metadata stores it
        assert tinyvit.TinyViTConfig.from_dict(as_dict) == config


def test_gelu_is_the_exact_erf_form():
    x = np.linspace(-4, 4, 41).astype(np.float32)
    expected = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]
    np.testing.assert_allclose(tinyvit._gelu(tf.constant(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_attention_bias_index_groups_pairs_by_offset():
    for ws in (1, 2, 3, 7):
        index = tinyvit.attention_bias_index(ws)
        n = ws * ws
        assert index.shape == (n, n) and index.dtype == np.int32
        assert len(np.unique(index)) == n  # |dy| and |dx| each in 0 .. ws - 1
        np.testing.assert_array_equal(index, index.T)
        assert np.all(np.diag(index) == 0)  # offset (0, 0) is the first one met
    index = tinyvit.attention_bias_index(3)
    points = [(y, x) for y in range(3) for x in range(3)]
    for a, (ya, xa) in enumerate(points):
        for b, (yb, xb) in enumerate(points):
            same = [(c, d) for c, (yc, xc) in enumerate(points) for d, (yd, xd) in enumerate(points)
                    if (abs(yc - yd), abs(xc - xd)) == (abs(ya - yb), abs(xa - xb))]
            assert all(index[c, d] == index[a, b] for c, d in same)


@pytest.mark.parametrize("kernel, stride, pad, depthwise", [(1, 1, 0, False), (3, 1, 1, True), (3, 2, 1, True),
                                                            (3, 2, 1, False)])
def test_conv2d_bn_folds_batchnorm_exactly(kernel, stride, pad, depthwise):
    """Folded conv + bias equals PyTorch's Conv2d(padding=pad) followed by BatchNorm at inference."""
    rng = np.random.default_rng(0)
    channels = 6
    layer = tinyvit.Conv2dBN(channels, kernel, stride, pad, depthwise=depthwise)
    x = tf.constant(rng.normal(size=(2, 9, 9, channels)).astype(np.float32))
    layer(x)
    bn = layer.bn
    for variable, values in ((bn.gamma, rng.uniform(0.5, 2, channels)), (bn.beta, rng.normal(size=channels)),
                             (bn.moving_mean, rng.normal(size=channels)),
                             (bn.moving_variance, rng.uniform(0.1, 3, channels))):
        variable.assign(values.astype(np.float32))
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])  # PyTorch's symmetric zero padding
    strides = [1, stride, stride, 1]
    if depthwise:
        conv = tf.nn.depthwise_conv2d(padded, layer.c.depthwise_kernel, strides, "VALID")
    else:
        conv = tf.nn.conv2d(padded, layer.c.kernel, strides, "VALID")
    expected = (conv - bn.moving_mean) / tf.sqrt(bn.moving_variance + 1e-5) * bn.gamma + bn.beta
    got = layer(x)
    assert got.shape == expected.shape == (2, (9 + 2 * pad - kernel) // stride + 1, (9 + 2 * pad - kernel) // stride
                                           + 1, channels)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_encoder_output_shape_and_frozen_batchnorm(encoder):
    x = tf.constant(np.random.default_rng(1).random((2, 64, 64, 3)).astype(np.float32))
    means = [v.numpy().copy() for v in encoder.variables if "moving_mean" in v.name]
    out = encoder(x, training=False)
    assert out.shape == (2, TINY.out_channels, 16, 16)  # channels first, S / 4
    np.testing.assert_allclose(encoder(x, training=True).numpy(), out.numpy(), rtol=1e-5, atol=1e-5)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(means, [v for v in encoder.variables
                                                                   if "moving_mean" in v.name]))
    assert encoder(x[:, :32, :32]).shape == (2, TINY.out_channels, 8, 8)  # the weights fit any multiple of 4


def test_block_attention_stays_in_its_window():
    """A 10 x 10 map is padded to two 7 x 7 windows a side; a change in one window never reaches a far one."""
    block = tinyvit.TinyViTBlock(8, 2, 7, 2.0, 3)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 10, 10, 8)).astype(np.float32)
    base = block(tf.constant(x)).numpy()
    assert base.shape == (1, 10, 10, 8) and np.all(np.isfinite(base))
    changed = x.copy()
    changed[0, 0, 0, 0] += 5.0  # one channel (a shift of all channels would vanish in the LayerNorm)
    diff = np.abs(block(tf.constant(changed)).numpy() - base).max(axis=-1)[0]
    assert diff[3, 3] > 1e-4 and diff[6, 6] > 1e-4  # same window
    assert diff[8:, :].max() == 0.0 and diff[:, 8:].max() == 0.0  # beyond the window and the 3 x 3 local conv


def test_weight_map_names_every_variable_once(encoder):
    entries = list(encoder.weight_map())
    keys = [key for key, _, _ in entries]
    assert len(keys) == len(set(keys)) and all(key.startswith("image_encoder.") for key in keys)
    mapped = {id(variable) for _, variable, _ in entries}
    assert len(mapped) == len(entries) and mapped == {id(v) for v in encoder.variables}
    layouts = {layout for _, _, layout in entries}
    assert layouts <= {tinyvit.COPY, tinyvit.LINEAR, tinyvit.CONV, tinyvit.DWCONV}
    by_key = {key: (variable, layout) for key, variable, layout in entries}
    assert by_key["image_encoder.layers.0.blocks.0.conv2.c.weight"][1] == tinyvit.DWCONV
    assert by_key["image_encoder.layers.1.blocks.0.attn.qkv.weight"][1] == tinyvit.LINEAR
    assert by_key["image_encoder.neck.0.weight"][0].shape == (1, 1, TINY.embed_dims[-1], TINY.out_channels)
    assert by_key["image_encoder.layers.1.blocks.0.attn.attention_biases"][0].shape == (
        TINY.num_heads[1], len(np.unique(tinyvit.attention_bias_index(TINY.window_sizes[1]))))
    assert "image_encoder.layers.3.downsample.conv1.c.weight" not in by_key  # no merging after the last stage


def test_buffer_map_has_one_bias_index_per_attention_block(encoder):
    buffers = dict(encoder.buffer_map())
    expected = {f"image_encoder.layers.{i}.blocks.{j}.attn.attention_bias_idxs"
                for i in (1, 2, 3) for j in range(TINY.depths[i])}
    assert set(buffers) == expected  # stage 0 is MBConv: no attention
    np.testing.assert_array_equal(buffers["image_encoder.layers.2.blocks.0.attn.attention_bias_idxs"],
                                  tinyvit.attention_bias_index(TINY.window_sizes[2]))
