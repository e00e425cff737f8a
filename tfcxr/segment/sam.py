"""Hugging Face ``TFSamModel`` loading (ViT SAM / MedSAM) with the preprocessing its checkpoint expects.

``load_hf_sam`` accepts a hub id (``facebook/sam-vit-base``, ``flaviagiammarino/medsam-vit-base``) or a local
directory written by ``save_pretrained``. ``normalization_for`` reads the checkpoint's
``preprocessor_config.json`` (SAM's image processor: rescale to [0, 1], then ImageNet mean/std unless
``do_normalize`` is false), falling back to the SAM default (ImageNet) or, for MedSAM ports, no normalisation.
``tiny_sam_config`` is a small random ``SamConfig`` for tests.
"""

from __future__ import annotations

import json
import logging
import pathlib

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def tiny_sam_config(image_size: int = 64):
    """A small random ViT ``SamConfig`` (hidden 32, 2 layers, patch 16) for tests."""
    from transformers import SamConfig

    return SamConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
                           patch_size=16, output_channels=32, global_attn_indexes=[1], window_size=2,
                           num_pos_feats=16, mlp_dim=64),
        prompt_encoder_config=dict(hidden_size=32, image_size=image_size, patch_size=16, mask_input_channels=8),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )


def _preprocessor_config(source: str):
    local = pathlib.Path(source) / "preprocessor_config.json"
    if local.is_file():
        return json.loads(local.read_text())
    if pathlib.Path(source).exists():
        return None
    try:  # hub id: only works with network or a populated HF cache
        from transformers import SamImageProcessor

        return SamImageProcessor.from_pretrained(source).to_dict()
    except (OSError, ValueError) as err:
        log.warning("no preprocessor config for %s (%s)", source, err)
        return None


def normalization_for(source: str) -> dict:
    """``{"mode": "none"}`` or ``{"mode": "meanstd", "mean": [...], "std": [...]}`` for images in [0, 1]."""
    cfg = _preprocessor_config(source)
    if cfg is None:
        if "medsam" in str(source).lower():
            log.warning("%s: no preprocessor_config.json; assuming MedSAM inputs in [0, 1]", source)
            return {"mode": "none"}
        log.warning("%s: no preprocessor_config.json; assuming SAM's ImageNet mean/std", source)
        return {"mode": "meanstd", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if not cfg.get("do_normalize", True):
        return {"mode": "none"}
    mean, std = cfg.get("image_mean", IMAGENET_MEAN), cfg.get("image_std", IMAGENET_STD)
    return {"mode": "meanstd", "mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def load_hf_sam(source: str, from_pt: bool | None = None):
    """``TFSamModel.from_pretrained(source)`` in float32.

    ``from_pt=None`` picks PyTorch weights (needs torch) only for a local directory without ``tf_model.h5``.
    Errors name the source.
    """
    from transformers import TFSamModel

    path = pathlib.Path(source)
    if from_pt is None:
        from_pt = path.is_dir() and not (path / "tf_model.h5").is_file() and not any(path.glob("tf_model*.h5"))
    try:
        return TFSamModel.from_pretrained(source, from_pt=from_pt)
    except OSError as err:
        hint = "" if path.exists() else " (a hub id needs network access or a populated Hugging Face cache)"
        raise OSError(f"{source}: cannot load a TFSamModel{hint}: {err}") from err
