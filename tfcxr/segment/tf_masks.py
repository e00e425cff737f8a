"""The pure-TF mask path: model-input boxes, in-graph box refinement and the exportable :func:`lung_masks_tf`.

Every function here builds TF ops only (no numpy or OpenCV on tensors), so it runs eagerly, in ``tf.function``
and in a SavedModel (the serving graph's embedded segmenter, :mod:`tfcxr.export.segmenter`). The model is any object
with the ``SamLungModel`` interface of :mod:`tfcxr.segment.model`: ``image_size``, ``preprocess``, ``embed``,
``decode``, ``postprocess`` and ``normalized_to_input_boxes``.
"""

from __future__ import annotations

from .prompts import DEFAULT_REFINE_MARGIN, InferenceSettings, resolve


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


def decode_with_refine(model, embeddings, boxes, refine_rounds: int = 0, margin: float = DEFAULT_REFINE_MARGIN,
                       head: str = ""):
    """Decode boxes, then re-prompt `refine_rounds` times with the box of each predicted lung component plus margin.

    With a `head`, the model's own masks choose the boxes and the final boxes are decoded once more through that
    head (another mask definition, ``SamLungModel.heads``).

    Args:
        model: a ``SamLungModel``.
        embeddings: image embeddings from ``model.embed``.
        boxes: float32 (batch, boxes, 4) xyxy in model-input pixels.
        refine_rounds: 0 (plain boxes) or more refinement rounds.
        margin: refinement margin as a fraction of the model input size.
        head: "" or the name of one of ``model.heads``.

    Returns:
        (low_res_logits float32 (batch, boxes, 256, 256), final boxes float32 (batch, boxes, 4)).
    """
    logits = model.decode(embeddings, boxes)
    for _ in range(refine_rounds):
        boxes = refine_boxes(logits, boxes, model.image_size, margin)
        logits = model.decode(embeddings, boxes)
    if head:
        logits = model.decode(embeddings, boxes, head)
    return logits, boxes


def lung_masks_tf(model, images, settings: InferenceSettings | None = None, priors=None,
                  return_embeddings: bool = False):
    """Pure-TF lung masks for export: prior boxes, optional in-graph refinement, union of both lungs.

    Traceable in ``tf.function`` and savable in a ``tf.Module`` SavedModel. Unlike
    :func:`tfcxr.segment.eager_masks.segment_lungs` it does not fill holes or drop small components (no connected
    components in core TF).

    Args:
        model: a ``SamLungModel``.
        images: float32 (batch, height, width, 1) in [0, 1], one size per batch.
        settings: :class:`InferenceSettings` (prompt, refine rounds, margin, threshold); None for the model's own.
        priors: float32 (2, 4) normalised prior boxes; None for the model's own (else
            :data:`tfcxr.segment.prompts.DEFAULT_PRIORS`).
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
    logits, _ = decode_with_refine(model, embeddings, boxes, settings.rounds, settings.margin,
                                   settings.definition)  # (batch, 2, h, w)
    full = model.postprocess(logits, sizes)  # (batch, 2, height, width)
    masks = tf.cast(tf.reduce_any(full > settings.threshold, axis=1), tf.float32)[..., None]  # (batch, H, W, 1)
    return (masks, embeddings) if return_embeddings else masks
