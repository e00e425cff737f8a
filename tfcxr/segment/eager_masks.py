"""Eager, batched lung masks of image lists with box prompts: image embeddings and :func:`segment_lungs`.

Unlike the pure-TF :func:`tfcxr.segment.tf_masks.lung_masks_tf`, masks here can use the ``gt`` prompt, are cleaned
(:func:`tfcxr.segment.mask_components.clean_lung_mask`) and can come with their threshold stability. The model is
any object with the ``SamLungModel`` interface of :mod:`tfcxr.segment.model`.
"""

from __future__ import annotations

import numpy as np

from .mask_components import clean_lung_mask, mask_stability
from .prompts import InferenceSettings, check_prompt, gt_normalized_boxes, resolve
from .tf_masks import decode_with_refine, input_boxes


def embed_images(model, images, batch_size: int = 8) -> np.ndarray:
    """Image embeddings of a list of float32 (H_i, W_i, 1) images in [0, 1] -> float32 (N, 256, 64, 64)."""
    import tensorflow as tf

    parts = []
    for start in range(0, len(images), batch_size):
        pixel_values = tf.concat([model.preprocess(np.asarray(image, np.float32)[None])[0]
                                  for image in images[start : start + batch_size]], axis=0)
        parts.append(np.asarray(model.embed(pixel_values)))
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def segment_lungs(model, images, prompt: str | None = None, *, settings: InferenceSettings | None = None,
                  priors=None, gt_masks=None, batch_size: int = 8, embeddings=None, return_stability: bool = False):
    """Segment the lungs of a list of images with box prompts (eager, batched).

    Args:
        model: a ``SamLungModel``.
        images: sequence of float32 (height, width, 1) images in [0, 1]; sizes may differ.
        prompt: "gt" (needs `gt_masks`), "prior" or "refine"; None for ``settings.prompt``.
        settings: :class:`InferenceSettings` (refine rounds, margin, threshold, clean); None for the model's own.
        priors: float32 (2, 4) normalised prior boxes; None for the model's own (else
            :data:`tfcxr.segment.prompts.DEFAULT_PRIORS`).
        gt_masks: for prompt "gt", bool (height, width) masks, one per image.
        batch_size: images per model call.
        embeddings: optional precomputed ``model.embed`` outputs, one per image (stacked along axis 0).
        return_stability: also return each mask's :func:`mask_stability`.

    Returns:
        list of bool (height, width) lung masks at each image's own size (and a list of float stabilities).
    """
    import tensorflow as tf

    settings, priors = resolve(model, settings, priors)
    prompt = check_prompt(prompt or settings.prompt)
    if prompt == "gt" and (gt_masks is None or len(gt_masks) != len(images)):
        raise ValueError("`prompt='gt'` needs one ground-truth mask per image in `gt_masks`.")
    rounds = settings.refine_rounds if prompt == "refine" else 0
    masks, stabilities = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        prepared = [model.preprocess(np.asarray(image, np.float32)[None]) for image in batch]
        pixel_values = tf.concat([p[0] for p in prepared], axis=0)
        if embeddings is None:
            batch_embeddings = model.embed(pixel_values)
        else:
            batch_embeddings = tf.convert_to_tensor(embeddings[start : start + len(batch)])
        if prompt == "gt":
            norm = np.stack([gt_normalized_boxes(m, priors) for m in gt_masks[start : start + len(batch)]])
        else:
            norm = np.broadcast_to(priors, (len(batch), 2, 4))
        boxes = tf.concat([input_boxes(model, norm[i : i + 1], p[1]) for i, p in enumerate(prepared)], axis=0)
        logits, _ = decode_with_refine(model, batch_embeddings, boxes, rounds, settings.margin,
                                       settings.definition)  # (batch, 2, h, w)
        for i, (_, sizes) in enumerate(prepared):
            full = np.asarray(model.postprocess(logits[i : i + 1], sizes))[0].max(axis=0)  # (height, width)
            mask = full > settings.threshold
            masks.append(clean_lung_mask(mask) if settings.clean else mask)
            if return_stability:
                stabilities.append(mask_stability(full, settings.threshold, settings.clean))
    return (masks, stabilities) if return_stability else masks
