"""Box prompts for lung segmentation with a SAM-style model, and mask post-processing.

Three prompt strategies (DESIGN.md §3):

- ``gt``: one box per lung component of a ground-truth mask (optionally jittered outwards, MedSAM style).
- ``prior``: two fixed per-lung boxes in normalised image coordinates, fitted from training masks
  (median of each lung's normalised bounding box) or the defaults ``[30,30,125,220]`` and ``[131,30,226,220]``
  in 256-space.
- ``refine``: run the prior boxes, then re-prompt with the bounding box of each box's predicted lung component
  (the connected region around its highest logit) plus a margin, for 1-2 rounds.

Boxes are ``(x_min, y_min, x_max, y_max)`` float32. "Normalised" boxes are fractions of the image width/height.
The union of the per-lung masks is the lung mask; :func:`clean_lung_mask` fills holes and keeps the two largest
components.

The model is any object with the ``SamLungModel`` interface of :mod:`tfcxr.segment.model`: ``image_size``,
``preprocess``, ``embed``, ``decode`` and ``postprocess``.
"""

from __future__ import annotations

import json
import os
import pathlib

import cv2
import numpy as np

PROMPTS = ("gt", "prior", "refine")
PRIORS_FILENAME = "lung_priors.json"
DEFAULT_PRIOR_BOXES_256 = ((30.0, 30.0, 125.0, 220.0), (131.0, 30.0, 226.0, 220.0))
DEFAULT_PRIORS = np.asarray(DEFAULT_PRIOR_BOXES_256, np.float32) / 256.0  # (2, 4) normalised xyxy
DEFAULT_REFINE_MARGIN = 0.02  # fraction of the model input size (about 5 px at 256)


def check_prompt(prompt: str) -> str:
    """Validate a prompt strategy name."""
    if prompt not in PROMPTS:
        raise ValueError(f"`prompt` must be one of {PROMPTS}. Received: prompt={prompt!r}")
    return prompt


# ----------------------------------------------------------------------------------------------------------------
# Masks -> components -> boxes
# ----------------------------------------------------------------------------------------------------------------
def lung_components(mask, max_components: int = 2, min_relative_area: float = 0.05) -> list[np.ndarray]:
    """Split a lung mask into its largest connected components, ordered left to right in the image.

    Args:
        mask: bool/0-1 (height, width) mask.
        max_components: keep at most this many components (largest first).
        min_relative_area: drop components smaller than this fraction of the largest one.

    Returns:
        list of bool (height, width) masks, sorted by the x of their centroid; empty if `mask` is empty.
    """
    mask = np.asarray(mask).astype(np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"`mask` must be 2-D (height, width). Received shape: {mask.shape}")
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return []
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(-areas, kind="stable")[:max_components]
    order = [i for i in order if areas[i] >= min_relative_area * areas[order[0]]]
    order.sort(key=lambda i: centroids[i + 1, 0])
    return [labels == (i + 1) for i in order]


def mask_box(mask) -> np.ndarray:
    """Tight box of a non-empty bool (height, width) mask -> float32 (4,) xyxy, max coordinates inclusive."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError("Cannot take the box of an empty mask.")
    return np.asarray([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def component_boxes(mask, max_components: int = 2) -> np.ndarray:
    """One box per lung component of a (height, width) mask -> float32 (num_boxes, 4) xyxy pixels, left first."""
    return np.stack([mask_box(c) for c in lung_components(mask, max_components)]) if np.any(mask) else (
        np.zeros((0, 4), np.float32)
    )


def jitter_boxes(boxes, max_shift: float, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Move every side of every box outwards by a uniform random amount in [0, max_shift] pixels (MedSAM).

    Args:
        boxes: float32 (..., 4) xyxy pixels.
        max_shift: largest shift per side in pixels (5-20 is MedSAM's range).
        size: (height, width) used to clip the boxes.
        rng: numpy Generator (seeded by the caller).

    Returns:
        float32 (..., 4) jittered boxes inside the image.
    """
    boxes = np.asarray(boxes, np.float32)
    shift = rng.uniform(0.0, max_shift, size=boxes.shape).astype(np.float32) * np.asarray([-1, -1, 1, 1], np.float32)
    height, width = size
    upper = np.asarray([width - 1, height - 1, width - 1, height - 1], np.float32)
    return np.clip(boxes + shift, 0.0, upper)


def normalize_boxes(boxes, size: tuple[int, int]) -> np.ndarray:
    """Pixel xyxy boxes (..., 4) in an image of (height, width) -> normalised xyxy in [0, 1]."""
    height, width = size
    return np.asarray(boxes, np.float32) / np.asarray([width, height, width, height], np.float32)


def denormalize_boxes(boxes, size: tuple[int, int]) -> np.ndarray:
    """Normalised xyxy boxes (..., 4) -> pixel xyxy boxes in an image of (height, width)."""
    height, width = size
    return np.asarray(boxes, np.float32) * np.asarray([width, height, width, height], np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Priors
# ----------------------------------------------------------------------------------------------------------------
def fit_priors(masks) -> np.ndarray:
    """Fit per-lung prior boxes: the median normalised box of each lung over masks with two components.

    Args:
        masks: iterable of bool (height, width) lung masks (any sizes).

    Returns:
        float32 (2, 4) normalised xyxy boxes, (image-left lung, image-right lung). The defaults
        (:data:`DEFAULT_PRIORS`) when no mask has two components.
    """
    boxes = []
    for mask in masks:
        mask = np.asarray(mask)
        if not mask.any():
            continue
        parts = lung_components(mask, max_components=2)
        if len(parts) == 2:
            boxes.append(normalize_boxes(np.stack([mask_box(p) for p in parts]), mask.shape[:2]))
    if not boxes:
        return DEFAULT_PRIORS.copy()
    return np.median(np.stack(boxes), axis=0).astype(np.float32)


def save_priors(directory, priors, num_masks: int | None = None) -> pathlib.Path:
    """Write (2, 4) normalised prior boxes to ``directory/lung_priors.json``; returns the path."""
    path = pathlib.Path(directory) / PRIORS_FILENAME
    payload = {
        "format": "xyxy, normalised to image width/height; (image-left lung, image-right lung)",
        "boxes": np.asarray(priors, np.float32).round(5).tolist(),
        "num_masks": num_masks,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)
    return path


def load_priors(directory=None) -> np.ndarray:
    """Read ``directory/lung_priors.json`` -> float32 (2, 4) normalised boxes; defaults when absent or None."""
    if directory is None:
        return DEFAULT_PRIORS.copy()
    path = pathlib.Path(directory) / PRIORS_FILENAME
    if not path.is_file():
        return DEFAULT_PRIORS.copy()
    try:
        boxes = np.asarray(json.loads(path.read_text())["boxes"], np.float32)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a valid priors file ({err})") from err
    if boxes.shape != (2, 4) or not np.all((boxes >= 0) & (boxes <= 1)):
        raise ValueError(f"{path}: `boxes` must be (2, 4) normalised xyxy in [0, 1]. Received: {boxes.tolist()}")
    return boxes


# ----------------------------------------------------------------------------------------------------------------
# Post-processing
# ----------------------------------------------------------------------------------------------------------------
def clean_lung_mask(mask, max_components: int = 2, min_relative_area: float = 0.05) -> np.ndarray:
    """Fill holes and keep the largest lung components.

    Args:
        mask: bool/0-1 (height, width) union of per-lung masks.
        max_components: number of components to keep (2 lungs).
        min_relative_area: drop components smaller than this fraction of the largest one.

    Returns:
        bool (height, width) cleaned mask.
    """
    kept = np.zeros(np.shape(mask), np.uint8)
    for part in lung_components(mask, max_components, min_relative_area):
        contours, _ = cv2.findContours(part.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(kept, contours, -1, 1, thickness=cv2.FILLED)
    return kept.astype(bool)


# ----------------------------------------------------------------------------------------------------------------
# Model-facing helpers (TF; usable eagerly, in tf.function and in a SavedModel)
# ----------------------------------------------------------------------------------------------------------------
def input_boxes(model, normalized_boxes, sizes):
    """Map normalised xyxy boxes to the model-input pixel frame the decoder expects.

    Args:
        model: a ``SamLungModel``.
        normalized_boxes: float32 (batch, boxes, 4) xyxy in [0, 1] of the original image.
        sizes: the ``sizes`` returned by ``model.preprocess`` for the same images.

    Returns:
        tf.float32 (batch, boxes, 4) xyxy in model-input pixels.
    """
    import tensorflow as tf

    return model.normalized_to_input_boxes(tf.convert_to_tensor(normalized_boxes, tf.float32), sizes)


def peak_component(low_res_logits, cell: int = 4):
    """The connected region of positive logits that holds each map's highest logit.

    A pure-TF flood fill, so it runs in ``tf.function`` and a SavedModel: on a grid of `cell` x `cell` cells
    (a cell is positive when any of its pixels is), a 3x3 max-pool dilation kept inside the positive cells
    grows from the peak's cell until it stops changing; the region is the positive pixels of the reached cells.
    Positive specks more than a cell away from the lung are left out, so they cannot stretch the box that
    :func:`refine_boxes` derives from it.

    Args:
        low_res_logits: float32 (batch, boxes, h, w) decoder logits.
        cell: grid cell side in low-res pixels (4 at 256x256 logits: the decoder's 64x64 embedding grid); the
            maps are padded at the bottom and right to a multiple of it.

    Returns:
        tf.bool (batch, boxes, h, w); all False where a map has no positive logit.
    """
    import tensorflow as tf

    logits = tf.convert_to_tensor(low_res_logits, tf.float32)
    shape = tf.shape(logits)
    positive = tf.cast(logits > 0.0, tf.float32)
    # Channels-last (1, h, w, batch * boxes): one pooling call covers every map.
    maps = tf.transpose(tf.reshape(positive, [-1, shape[-2], shape[-1]]), [1, 2, 0])[None]
    padded = tf.pad(maps, [[0, 0], [0, -shape[-2] % cell], [0, -shape[-1] % cell], [0, 0]])
    allowed = tf.nn.max_pool2d(padded, cell, cell, "VALID")  # (1, ceil(h / cell), ceil(w / cell), n)
    grid = tf.shape(allowed)
    flat_logits = tf.transpose(tf.reshape(logits, [-1, shape[-2] * shape[-1]]))  # (h * w, n)
    peak = tf.argmax(flat_logits, axis=0, output_type=tf.int32)  # (n,)
    peak_cell = (peak // shape[-1] // cell) * grid[2] + (peak % shape[-1]) // cell
    seed = tf.reshape(tf.transpose(tf.one_hot(peak_cell, grid[1] * grid[2])), grid) * allowed

    def grow(region, _):
        return tf.nn.max_pool2d(region, 3, 1, "SAME") * allowed, region

    region, _ = tf.while_loop(lambda region, previous: tf.reduce_any(region != previous), grow, grow(seed, seed))
    region = tf.repeat(tf.repeat(region, cell, axis=1), cell, axis=2)[:, : shape[-2], : shape[-1]]  # (1, h, w, n)
    region = region * maps
    return tf.reshape(tf.transpose(region[0], [2, 0, 1]), shape) > 0.0


def refine_boxes(low_res_logits, boxes, image_size: int, margin: float = DEFAULT_REFINE_MARGIN):
    """Bounding box of each box's predicted lung component plus a margin; boxes with an empty mask stay as they were.

    The component is the connected positive region around the highest logit (:func:`peak_component`).

    Args:
        low_res_logits: float32 (batch, boxes, h, w) decoder logits covering the whole model input.
        boxes: float32 (batch, boxes, 4) the boxes that produced them, xyxy in model-input pixels.
        image_size: model input side in pixels.
        margin: margin added on every side, as a fraction of `image_size`.

    Returns:
        tf.float32 (batch, boxes, 4) refined xyxy boxes in model-input pixels, clipped to the input.
    """
    import tensorflow as tf

    boxes = tf.convert_to_tensor(boxes, tf.float32)
    positive = peak_component(low_res_logits)  # (batch, boxes, h, w)
    rows = tf.reduce_any(positive, axis=-1)  # (batch, boxes, h)
    cols = tf.reduce_any(positive, axis=-2)  # (batch, boxes, w)
    height = tf.shape(rows)[-1]
    width = tf.shape(cols)[-1]

    def first_last(flags, length):
        first = tf.argmax(tf.cast(flags, tf.int32), axis=-1, output_type=tf.int32)
        last = length - 1 - tf.argmax(tf.cast(tf.reverse(flags, axis=[-1]), tf.int32), axis=-1, output_type=tf.int32)
        return tf.cast(first, tf.float32), tf.cast(last, tf.float32)

    y_min, y_max = first_last(rows, height)
    x_min, x_max = first_last(cols, width)
    scale_x = float(image_size) / tf.cast(width, tf.float32)  # input pixels per low-res pixel
    scale_y = float(image_size) / tf.cast(height, tf.float32)
    pad = margin * float(image_size)
    # Low-res pixel i covers input pixels [i * scale, (i + 1) * scale); max coordinates are inclusive.
    new = tf.stack(
        [x_min * scale_x - pad, y_min * scale_y - pad, (x_max + 1.0) * scale_x - 1.0 + pad,
         (y_max + 1.0) * scale_y - 1.0 + pad],
        axis=-1,
    )  # (batch, boxes, 4)
    new = tf.clip_by_value(new, 0.0, float(image_size - 1))
    found = tf.reduce_any(rows, axis=-1, keepdims=True)  # (batch, boxes, 1)
    return tf.where(found, new, boxes)


def decode_with_refine(model, embeddings, boxes, refine_rounds: int = 0, margin: float = DEFAULT_REFINE_MARGIN):
    """Decode boxes, then re-prompt `refine_rounds` times with the box of each predicted lung component plus margin.

    Args:
        model: a ``SamLungModel``.
        embeddings: image embeddings from ``model.embed``.
        boxes: float32 (batch, boxes, 4) xyxy in model-input pixels.
        refine_rounds: 0 (plain boxes) or more refinement rounds.
        margin: refinement margin as a fraction of the model input size.

    Returns:
        (low_res_logits float32 (batch, boxes, 256, 256), final boxes float32 (batch, boxes, 4)).
    """
    logits = model.decode(embeddings, boxes)
    for _ in range(refine_rounds):
        boxes = refine_boxes(logits, boxes, model.image_size, margin)
        logits = model.decode(embeddings, boxes)
    return logits, boxes


def _gt_normalized_boxes(mask, fallback) -> np.ndarray:
    """(2, 4) normalised boxes of a ground-truth mask's lung components, padded by repeating; `fallback` if empty."""
    boxes = component_boxes(mask)
    if len(boxes) == 0:
        return fallback
    boxes = normalize_boxes(boxes, np.shape(mask)[:2])
    return np.concatenate([boxes, boxes[-1:]])[:2] if len(boxes) == 1 else boxes


def segment_lungs(
    model,
    images,
    prompt: str = "refine",
    priors=None,
    gt_masks=None,
    refine_rounds: int = 1,
    margin: float = DEFAULT_REFINE_MARGIN,
    batch_size: int = 8,
    embeddings=None,
    clean: bool = True,
) -> list[np.ndarray]:
    """Segment the lungs of a list of images with box prompts (eager, batched).

    Args:
        model: a ``SamLungModel``.
        images: sequence of float32 (height, width, 1) images in [0, 1]; sizes may differ.
        prompt: "gt" (needs `gt_masks`), "prior" or "refine".
        priors: float32 (2, 4) normalised prior boxes; :data:`DEFAULT_PRIORS` when None.
        gt_masks: for prompt "gt", bool (height, width) masks, one per image.
        refine_rounds: rounds of re-prompting for "refine" (1-2).
        margin: refinement margin, a fraction of the model input size.
        batch_size: images per model call.
        embeddings: optional precomputed ``model.embed`` outputs, one per image (stacked along axis 0).
        clean: fill holes and keep the two largest components (:func:`clean_lung_mask`).

    Returns:
        list of bool (height, width) lung masks at each image's own size.
    """
    import tensorflow as tf

    check_prompt(prompt)
    if prompt == "gt" and (gt_masks is None or len(gt_masks) != len(images)):
        raise ValueError("`prompt='gt'` needs one ground-truth mask per image in `gt_masks`.")
    priors = DEFAULT_PRIORS if priors is None else np.asarray(priors, np.float32)
    rounds = refine_rounds if prompt == "refine" else 0
    masks = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        prepared = [model.preprocess(np.asarray(image, np.float32)[None]) for image in batch]
        pixel_values = tf.concat([p[0] for p in prepared], axis=0)
        if embeddings is None:
            batch_embeddings = model.embed(pixel_values)
        else:
            batch_embeddings = tf.convert_to_tensor(embeddings[start : start + len(batch)])
        if prompt == "gt":
            norm = np.stack([_gt_normalized_boxes(m, priors) for m in gt_masks[start : start + len(batch)]])
        else:
            norm = np.broadcast_to(priors, (len(batch), 2, 4))
        boxes = tf.concat([input_boxes(model, norm[i : i + 1], p[1]) for i, p in enumerate(prepared)], axis=0)
        logits, _ = decode_with_refine(model, batch_embeddings, boxes, rounds, margin)  # (batch, 2, h, w)
        for i, (_, sizes) in enumerate(prepared):
            full = model.postprocess(logits[i : i + 1], sizes)  # (1, 2, height, width)
            mask = np.any(np.asarray(full)[0] > 0.0, axis=0)
            masks.append(clean_lung_mask(mask) if clean else mask)
    return masks


def lung_masks_tf(model, images, priors=None, refine_rounds: int = 1, margin: float = DEFAULT_REFINE_MARGIN):
    """Pure-TF lung masks for export: prior boxes, optional in-graph refinement, union of both lungs.

    Traceable in ``tf.function`` and savable in a ``tf.Module`` SavedModel. Unlike :func:`segment_lungs` it does
    not fill holes or drop small components (no connected components in core TF).

    Args:
        model: a ``SamLungModel``.
        images: float32 (batch, height, width, 1) in [0, 1], one size per batch.
        priors: float32 (2, 4) normalised prior boxes; :data:`DEFAULT_PRIORS` when None.
        refine_rounds: 0 for plain prior boxes, 1-2 to re-prompt with each predicted lung component's box plus margin.
        margin: refinement margin, a fraction of the model input size.

    Returns:
        tf.float32 (batch, height, width, 1) lung mask in {0, 1}.
    """
    import tensorflow as tf

    priors = tf.constant(DEFAULT_PRIORS if priors is None else np.asarray(priors, np.float32))
    images = tf.convert_to_tensor(images, tf.float32)
    pixel_values, sizes = model.preprocess(images)
    embeddings = model.embed(pixel_values)
    norm = tf.tile(priors[None], [tf.shape(images)[0], 1, 1])  # (batch, 2, 4)
    boxes = input_boxes(model, norm, sizes)
    logits, _ = decode_with_refine(model, embeddings, boxes, refine_rounds, margin)  # (batch, 2, h, w)
    full = model.postprocess(logits, sizes)  # (batch, 2, height, width)
    return tf.cast(tf.reduce_any(full > 0.0, axis=1), tf.float32)[..., None]  # (batch, height, width, 1)
