"""Training examples of the segmenter: model inputs, one box per lung and that lung's label in the logit frame.

The decoder's low-resolution logits are (label_size, label_size) (256 for LiteMedSAM) and cover the padded model
input; the image occupies their top-left `frame`, so labels are resized into that corner.
"""

import numpy as np

from tfcxr.data.pairs import Pair

from .mask_components import lung_components, mask_box
from .prompts import DEFAULT_PRIORS, normalize_boxes
from .tf_masks import input_boxes


def _label_frame(model, sizes, label_size: int):
    """(content_height, content_width) of the original image inside the (label_size, label_size) logit frame."""
    corner = np.asarray(input_boxes(model, np.asarray([[[0.0, 0.0, 1.0, 1.0]]], np.float32), sizes))[0, 0]
    scale = label_size / float(model.image_size)
    return max(1, round(corner[3] * scale)), max(1, round(corner[2] * scale))


def to_label_frame(mask, frame: tuple[int, int], label_size: int) -> np.ndarray:
    """Resize a bool (height, width) mask into the top-left `frame` of a (label_size, label_size) uint8 canvas."""
    import cv2

    small = cv2.resize(mask.astype(np.float32), (frame[1], frame[0]), interpolation=cv2.INTER_AREA) >= 0.5
    label = np.zeros((label_size, label_size), np.uint8)
    label[: frame[0], : frame[1]] = small
    return label


def prepare_examples(model, pairs: list[Pair], label_size: int, priors=None) -> dict[str, np.ndarray]:
    """Model inputs, per-lung boxes and labels for a list of pairs.

    Each image gets two boxes (one per lung component, image-left first; a single component is repeated) and a
    label per box: that component's mask in the low-resolution logit frame.

    Args:
        model: a ``SamLungModel``.
        pairs: the labelled pairs.
        label_size: side of the decoder's low-resolution logits.
        priors: float32 (2, 4) normalised prior boxes (image-left lung first); :data:`DEFAULT_PRIORS` when None.

    Returns:
        dict with ``pixel_values`` (n, S, S, C) float32, ``boxes`` (n, 2, 4) float32 model-input xyxy,
        ``prior_boxes`` (n, 2, 4) the prior boxes in the same frame, ``labels`` (n, 2, label_size, label_size)
        uint8 in {0, 1}, ``union`` (n, label_size, label_size) uint8.
    """
    priors = DEFAULT_PRIORS if priors is None else np.asarray(priors, np.float32)
    pixel_values, boxes, prior_boxes, labels = [], [], [], []
    for pair in pairs:
        values, sizes = model.preprocess(pair.image[None])
        frame = _label_frame(model, sizes, label_size)
        parts = lung_components(pair.mask, max_components=2) or [pair.mask]
        parts = (parts * 2)[:2]
        norm = np.stack([normalize_boxes(mask_box(p), pair.mask.shape) if p.any() else priors[i]
                         for i, p in enumerate(parts)])
        boxes.append(np.asarray(input_boxes(model, norm[None], sizes))[0])
        prior_boxes.append(np.asarray(input_boxes(model, priors[None], sizes))[0])
        labels.append(np.stack([to_label_frame(p, frame, label_size) for p in parts]))
        pixel_values.append(np.asarray(values)[0])
    labels = np.stack(labels)
    return {"pixel_values": np.stack(pixel_values), "boxes": np.stack(boxes).astype(np.float32),
            "prior_boxes": np.stack(prior_boxes).astype(np.float32), "labels": labels, "union": labels.max(axis=1)}
