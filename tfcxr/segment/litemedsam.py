"""LiteMedSAM in TensorFlow: Keras TinyViT encoder + Hugging Face TF SAM prompt encoder and mask decoder.

The prompt encoder and mask decoder are transformers' ``TFSamPromptEncoder`` / ``TFSamMaskDecoder``
configured for a 256 input (64x64 embedding, 256x256 low-resolution masks). ``weight_map`` names every
TF variable by its key in MedSAM's PyTorch state dict (``lite_medsam.pth``), which
``tfcxr.segment.weights`` uses for import and for our own save/load format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .tinyvit import CONV, CONV_TRANSPOSE, COPY, LINEAR, TinyViT, TinyViTConfig


@dataclass(frozen=True)
class LiteMedSAMConfig:
    """Encoder config plus SAM prompt-encoder / mask-decoder sizes (defaults: the released LiteMedSAM)."""

    encoder: TinyViTConfig = field(default_factory=TinyViTConfig)
    decoder_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_depth: int = 2
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16

    def __post_init__(self):
        if self.encoder.out_channels != self.decoder_dim:
            raise ValueError(
                f"encoder out_channels ({self.encoder.out_channels}) must equal decoder_dim ({self.decoder_dim})")

    @property
    def image_size(self) -> int:
        return self.encoder.image_size

    def to_dict(self) -> dict:
        return {"encoder": self.encoder.to_dict(), "decoder_dim": self.decoder_dim,
                "decoder_mlp_dim": self.decoder_mlp_dim, "decoder_depth": self.decoder_depth,
                "decoder_heads": self.decoder_heads, "iou_head_hidden_dim": self.iou_head_hidden_dim,
                "mask_in_chans": self.mask_in_chans}

    @classmethod
    def from_dict(cls, d: dict) -> "LiteMedSAMConfig":
        d = dict(d)
        return cls(encoder=TinyViTConfig.from_dict(d.pop("encoder")), **d)

    def sam_config(self):
        """The transformers ``SamConfig`` for the prompt encoder and mask decoder."""
        from transformers import SamConfig

        dim = self.decoder_dim
        return SamConfig(
            # Only used by the shared positional embedding: 2 x num_pos_feats random Fourier features.
            vision_config=dict(hidden_size=dim, output_channels=dim, num_pos_feats=dim // 2,
                               image_size=self.image_size, patch_size=4),
            prompt_encoder_config=dict(hidden_size=dim, image_size=self.image_size, patch_size=4,
                                       mask_input_channels=self.mask_in_chans),
            # PyTorch SAM's TwoWayTransformer uses nn.LayerNorm (eps 1e-5); HF's default is 1e-6.
            mask_decoder_config=dict(hidden_size=dim, mlp_dim=self.decoder_mlp_dim,
                                     num_hidden_layers=self.decoder_depth,
                                     num_attention_heads=self.decoder_heads,
                                     iou_head_hidden_dim=self.iou_head_hidden_dim, layer_norm_eps=1e-5),
        )


ARCHITECTURES = {
    "litemedsam": LiteMedSAMConfig(),
    # Random small config for tests: 64x64 input, 16x16 embedding, 64x64 low-res masks.
    "litemedsam-tiny": LiteMedSAMConfig(
        encoder=TinyViTConfig(image_size=64, embed_dims=(16, 24, 32, 48), depths=(1, 1, 1, 1),
                              num_heads=(1, 2, 2, 3), out_channels=32),
        decoder_dim=32, decoder_mlp_dim=64, decoder_heads=2, iou_head_hidden_dim=32, mask_in_chans=8),
}


def build_litemedsam(config: LiteMedSAMConfig):
    """Build and return ``(image_encoder, positional_embedding, prompt_encoder, mask_decoder)``, all built.

    Call inside a float32 tf_keras policy (``tfcxr.segment.model`` does).
    """
    import tensorflow as tf
    from transformers.models.sam.modeling_tf_sam import (
        TFSamMaskDecoder,
        TFSamPositionalEmbedding,
        TFSamPromptEncoder,
    )

    sam_config = config.sam_config()
    image_encoder = TinyViT(config.encoder, name="image_encoder")
    image_encoder(tf.zeros((1, 32, 32, 3)))  # build (variable shapes do not depend on the input size)
    pos = TFSamPositionalEmbedding(sam_config.vision_config, name="shared_image_embedding")
    prompt_encoder = TFSamPromptEncoder(sam_config.prompt_encoder_config, pos, name="prompt_encoder")
    mask_decoder = TFSamMaskDecoder(sam_config.mask_decoder_config, name="mask_decoder")
    for layer in (pos, prompt_encoder, mask_decoder):
        with tf.name_scope(layer.name):
            layer.build(None)
    return image_encoder, pos, prompt_encoder, mask_decoder


def _dense(prefix, layer):
    yield f"{prefix}.weight", layer.kernel, LINEAR
    yield f"{prefix}.bias", layer.bias, COPY


def _norm(prefix, layer):
    # keras LayerNormalization (gamma/beta) or TFSamLayerNorm (weight/bias)
    keras_norm = hasattr(layer, "gamma")
    yield f"{prefix}.weight", layer.gamma if keras_norm else layer.weight, COPY
    yield f"{prefix}.bias", layer.beta if keras_norm else layer.bias, COPY


def _conv(prefix, layer, kind=CONV):
    yield f"{prefix}.weight", layer.kernel, kind
    yield f"{prefix}.bias", layer.bias, COPY


def _attention(prefix, attn):
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        yield from _dense(f"{prefix}.{name}", getattr(attn, name))


def _feed_forward(prefix, ff):
    """HF TFSamFeedForward (proj_in, layers_._i, proj_out) <- PyTorch MLP (layers.0 .. layers.{n-1})."""
    dense = [ff.proj_in, *ff.layers, ff.proj_out]
    for i, layer in enumerate(dense):
        yield from _dense(f"{prefix}.layers.{i}", layer)


def prompt_encoder_weight_map(prompt_encoder, prefix="prompt_encoder"):
    """Yield ``(pytorch_key, tf.Variable, layout)`` for a built ``TFSamPromptEncoder`` (incl. the shared PE)."""
    yield (f"{prefix}.pe_layer.positional_encoding_gaussian_matrix",
           prompt_encoder.shared_embedding.positional_embedding, COPY)
    for i, var in enumerate(prompt_encoder.point_embed):
        yield f"{prefix}.point_embeddings.{i}.weight", var, COPY
    yield f"{prefix}.not_a_point_embed.weight", prompt_encoder.not_a_point_embed, COPY
    yield f"{prefix}.no_mask_embed.weight", prompt_encoder.no_mask_embed, COPY
    m = prompt_encoder.mask_embed
    yield from _conv(f"{prefix}.mask_downscaling.0", m.conv1)
    yield from _norm(f"{prefix}.mask_downscaling.1", m.layer_norm1)
    yield from _conv(f"{prefix}.mask_downscaling.3", m.conv2)
    yield from _norm(f"{prefix}.mask_downscaling.4", m.layer_norm2)
    yield from _conv(f"{prefix}.mask_downscaling.6", m.conv3)


def mask_decoder_weight_map(mask_decoder, prefix="mask_decoder"):
    """Yield ``(pytorch_key, tf.Variable, layout)`` for a built ``TFSamMaskDecoder``."""
    t = mask_decoder.transformer
    for i, layer in enumerate(t.layers):
        p = f"{prefix}.transformer.layers.{i}"
        yield from _attention(f"{p}.self_attn", layer.self_attn)
        yield from _norm(f"{p}.norm1", layer.layer_norm1)
        yield from _attention(f"{p}.cross_attn_token_to_image", layer.cross_attn_token_to_image)
        yield from _norm(f"{p}.norm2", layer.layer_norm2)
        yield from _dense(f"{p}.mlp.lin1", layer.mlp.lin1)
        yield from _dense(f"{p}.mlp.lin2", layer.mlp.lin2)
        yield from _norm(f"{p}.norm3", layer.layer_norm3)
        yield from _norm(f"{p}.norm4", layer.layer_norm4)
        yield from _attention(f"{p}.cross_attn_image_to_token", layer.cross_attn_image_to_token)
    yield from _attention(f"{prefix}.transformer.final_attn_token_to_image", t.final_attn_token_to_image)
    yield from _norm(f"{prefix}.transformer.norm_final_attn", t.layer_norm_final_attn)
    yield f"{prefix}.iou_token.weight", mask_decoder.iou_token, COPY
    yield f"{prefix}.mask_tokens.weight", mask_decoder.mask_tokens, COPY
    yield from _conv(f"{prefix}.output_upscaling.0", mask_decoder.upscale_conv1, CONV_TRANSPOSE)
    yield from _norm(f"{prefix}.output_upscaling.1", mask_decoder.upscale_layer_norm)
    yield from _conv(f"{prefix}.output_upscaling.3", mask_decoder.upscale_conv2, CONV_TRANSPOSE)
    for i, mlp in enumerate(mask_decoder.output_hypernetworks_mlps):
        yield from _feed_forward(f"{prefix}.output_hypernetworks_mlps.{i}", mlp)
    yield from _feed_forward(f"{prefix}.iou_prediction_head", mask_decoder.iou_prediction_head)


def litemedsam_weight_map(image_encoder, prompt_encoder, mask_decoder):
    """All ``(pytorch_key, tf.Variable, layout)`` triples of a LiteMedSAM built by ``build_litemedsam``."""
    yield from image_encoder.weight_map("image_encoder")
    yield from mask_decoder_weight_map(mask_decoder)
    yield from prompt_encoder_weight_map(prompt_encoder)
