"""Box prompts for lung segmentation with a SAM-style model, and mask post-processing.

Three prompt strategies:

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

import dataclasses
import json
import pathlib

import cv2
import numpy as np

PROMPTS = ("gt", "prior", "refine")
PRIORS_FILENAME = "lung_priors.json"  # priors of a version-1 saved segmenter; later versions keep them in its JSON
DEFAULT_PRIOR_BOXES_256 = ((30.0, 30.0, 125.0, 220.0), (131.0, 30.0, 226.0, 220.0))
DEFAULT_PRIORS = np.asarray(DEFAULT_PRIOR_BOXES_256, np.float32) / 256.0  # (2, 4) normalised xyxy
DEFAULT_REFINE_MARGIN = 0.02  # fraction of the model input size (about 5 px at 256)
STABILITY_DELTA = 2.0  # mask stability compares the masks at threshold -/+ this many logits


def check_prompt(prompt: str) -> str:
    """Validate a prompt strategy name."""
    if prompt not in PROMPTS:
        raise ValueError(f"`prompt` must be one of {PROMPTS}. Received: prompt={prompt!r}")
    return prompt


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """How a segmenter turns an image into a lung mask without ground truth; saved with the segmenter.

    Attributes:
        prompt: "prior" (the two prior boxes) or "refine" (prior boxes, then each lung's predicted component box).
        refine_rounds: re-prompting rounds for "refine" (1-3).
        margin: refine margin, a fraction of the model input size.
        threshold: logit threshold of the lung mask (0 = probability 0.5).
        clean: fill holes and keep the two largest components (:func:`clean_lung_mask`).
    """

    prompt: str = "refine"
    refine_rounds: int = 1
    margin: float = DEFAULT_REFINE_MARGIN
    threshold: float = 0.0
    clean: bool = True

    def __post_init__(self):
        if self.prompt not in ("prior", "refine"):
            raise ValueError(f"`prompt` must be one of ('prior', 'refine'). Received: prompt={self.prompt!r}")
        if not (isinstance(self.refine_rounds, int) and 1 <= self.refine_rounds <= 3):
            raise ValueError(f"`refine_rounds` must be 1, 2 or 3. Received: refine_rounds={self.refine_rounds!r}")
        if not 0.0 <= float(self.margin) <= 0.25:
            raise ValueError(f"`margin` must be in [0, 0.25]. Received: margin={self.margin!r}")
        if not -20.0 <= float(self.threshold) <= 20.0:
            raise ValueError(f"`threshold` must be a logit in [-20, 20]. Received: threshold={self.threshold!r}")

    @property
    def rounds(self) -> int:
        """Refinement rounds actually run: 0 for "prior"."""
        return self.refine_rounds if self.prompt == "refine" else 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "InferenceSettings":
        """Settings from a mapping; unknown keys are an error."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown inference settings {sorted(unknown)}")
        return cls(**values)

    def replace(self, **overrides) -> "InferenceSettings":
        """A copy with the non-None `overrides` applied (e.g. command-line flags)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def check_priors(priors, source="priors") -> np.ndarray:
    """Validate (2, 4) normalised xyxy prior boxes in [0, 1] -> float32 array; errors name `source`."""
    try:
        boxes = np.asarray(priors, np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: prior boxes must be numbers ({err})") from err
    if boxes.shape != (2, 4) or not np.all(np.isfinite(boxes) & (boxes >= 0) & (boxes <= 1)) or not np.all(
            boxes[:, 2:] > boxes[:, :2]):
        raise ValueError(f"{source}: prior boxes must be (2, 4) normalised xyxy in [0, 1] with max > min. "
                         f"Received: {boxes.tolist()}")
    return boxes


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


def read_priors_file(path) -> np.ndarray:
    """Read a version-1 ``lung_priors.json`` -> float32 (2, 4) normalised boxes; errors name the file."""
    path = pathlib.Path(path)
    try:
        boxes = json.loads(path.read_text())["boxes"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a valid priors file ({err})") from err
    return check_priors(boxes, path)


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


def resolve(model, settings=None, priors=None) -> tuple["InferenceSettings", np.ndarray]:
    """The settings and (2, 4) priors to use: the given ones, else the model's own, else the defaults."""
    settings = settings if settings is not None else getattr(model, "inference", None) or InferenceSettings()
    priors = priors if priors is not None else getattr(model, "priors", None)
    return settings, check_priors(DEFAULT_PRIORS if priors is None else priors)


def embed_images(model, images, batch_size: int = 8) -> np.ndarray:
    """Image embeddings of a list of float32 (H_i, W_i, 1) images in [0, 1] -> float32 (N, 256, 64, 64)."""
    import tensorflow as tf

    parts = []
    for start in range(0, len(images), batch_size):
        pixel_values = tf.concat([model.preprocess(np.asarray(image, np.float32)[None])[0]
                                  for image in images[start : start + batch_size]], axis=0)
        parts.append(np.asarray(model.embed(pixel_values)))
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def mask_stability(logits, threshold: float = 0.0, clean: bool = True) -> float:
    """How little a lung mask moves with its threshold: Dice of the masks at ``threshold -/+ STABILITY_DELTA``.

    Args:
        logits: float (height, width) lung logits (the per-lung maximum).
        threshold: the mask's logit threshold.
        clean: clean both masks as the mask itself is cleaned.

    Returns:
        float in [0, 1]; 1 when the border is sharp, low when the model is unsure where the lung ends.
    """
    loose, strict = (np.asarray(logits) > threshold - STABILITY_DELTA), (np.asarray(logits) > threshold + STABILITY_DELTA)
    if clean:
        loose, strict = clean_lung_mask(loose), clean_lung_mask(strict)
    total = loose.sum() + strict.sum()
    return float(2.0 * np.logical_and(loose, strict).sum() / total) if total else 1.0


def segment_lungs(model, images, prompt: str | None = None, *, settings: InferenceSettings | None = None,
                  priors=None, gt_masks=None, batch_size: int = 8, embeddings=None, return_stability: bool = False):
    """Segment the lungs of a list of images with box prompts (eager, batched).

    Args:
        model: a ``SamLungModel``.
        images: sequence of float32 (height, width, 1) images in [0, 1]; sizes may differ.
        prompt: "gt" (needs `gt_masks`), "prior" or "refine"; None for ``settings.prompt``.
        settings: :class:`InferenceSettings` (refine rounds, margin, threshold, clean); None for the model's own.
        priors: float32 (2, 4) normalised prior boxes; None for the model's own (else :data:`DEFAULT_PRIORS`).
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
            norm = np.stack([_gt_normalized_boxes(m, priors) for m in gt_masks[start : start + len(batch)]])
        else:
            norm = np.broadcast_to(priors, (len(batch), 2, 4))
        boxes = tf.concat([input_boxes(model, norm[i : i + 1], p[1]) for i, p in enumerate(prepared)], axis=0)
        logits, _ = decode_with_refine(model, batch_embeddings, boxes, rounds, settings.margin)  # (batch, 2, h, w)
        for i, (_, sizes) in enumerate(prepared):
            full = np.asarray(model.postprocess(logits[i : i + 1], sizes))[0].max(axis=0)  # (height, width)
            mask = full > settings.threshold
            masks.append(clean_lung_mask(mask) if settings.clean else mask)
            if return_stability:
                stabilities.append(mask_stability(full, settings.threshold, settings.clean))
    return (masks, stabilities) if return_stability else masks


def lung_masks_tf(model, images, settings: InferenceSettings | None = None, priors=None,
                  return_embeddings: bool = False):
    """Pure-TF lung masks for export: prior boxes, optional in-graph refinement, union of both lungs.

    Traceable in ``tf.function`` and savable in a ``tf.Module`` SavedModel. Unlike :func:`segment_lungs` it does
    not fill holes or drop small components (no connected components in core TF).

    Args:
        model: a ``SamLungModel``.
        images: float32 (batch, height, width, 1) in [0, 1], one size per batch.
        settings: :class:`InferenceSettings` (prompt, refine rounds, margin, threshold); None for the model's own.
        priors: float32 (2, 4) normalised prior boxes; None for the model's own (else :data:`DEFAULT_PRIORS`).
        return_embeddings: also return the image embeddings (batch, 256, 64, 64), e.g. for the CXR gate.

    Returns:
        tf.float32 (batch, height, width, 1) lung mask in {0, 1} (and the embeddings).
    """
    import tensorflow as tf

    settings, priors = resolve(model, settings, priors)
    images = tf.convert_to_tensor(images, tf.float32)
    pixel_values, sizes = model.preprocess(images)
    embeddings = model.embed(pixel_values)
    norm = tf.tile(tf.constant(priors)[None], [tf.shape(images)[0], 1, 1])  # (batch, 2, 4)
    boxes = input_boxes(model, norm, sizes)
    logits, _ = decode_with_refine(model, embeddings, boxes, settings.rounds, settings.margin)  # (batch, 2, h, w)
    full = model.postprocess(logits, sizes)  # (batch, 2, height, width)
    masks = tf.cast(tf.reduce_any(full > settings.threshold, axis=1), tf.float32)[..., None]  # (batch, H, W, 1)
    return (masks, embeddings) if return_embeddings else masks
