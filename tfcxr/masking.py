"""Lung masking of chest X-rays in pure TensorFlow ops: the mask modes, hole filling, lung boxes.

Modes (`lung` is the union of both lungs; the names and their validation: `tfcxr.mask_options`):
    `original`  the image unchanged.
    `tight`     `image * lung`.
    `loose`     `image * dilate(lung, r)`, `r` = the margin.
    `box`       `image * boxes(lung, r)`: one axis-aligned box per lung, each lung's bounding
                box grown by `r` on every side.
    `inverse`   `image * (1 - dilate(lung, r))`: the lungs removed, a shortcut probe (what can a
                classifier learn outside the lungs?). With margin 0 it is the complement of
                `tight`; with the default margin (0.05) the complement of `loose`, so the lung
                edges are removed too. The fill goes where the lungs were.

The ops here count a pixel margin in pixels of the image they are given (`apply_mask`,
`region_mask`); a run's `tfcxr.mask_spec.MaskSpec` counts it at the training resolution and
calls `mask_image` (source resolution) or `mask_by_distance` (prepared data) with the radius it
works out.

Dilation (`tfcxr.dilation.dilate`) uses an octagon of inradius `r`, within 8% of a disk, on
bit-packed batches. Prepared data (`tfcxr.data.tfds_source`) carries a distance map to the lungs
instead, and `mask_by_distance` keeps an exact disk of radius `r` with one comparison.

`box` splits the mask into a left and a right lung at the emptiest mask column of the central
half of the image (the mediastinum), then takes the bounding box of each side. It assumes an
upright frontal view with one lung on each side.

Background fill is 0 (`fill="zero"`) or the image's own mean (`fill="mean"`). Everything is TF
ops: it runs eagerly, inside `tf.data.Dataset.map`, and in a `tf.function`/SavedModel, on
`(H, W, 1)` or batched `(N, H, W, 1)` inputs (`mask_by_distance`: batched only).
"""

import numpy as np
import tensorflow as tf

from tfcxr.dilation import dilate_bool
from tfcxr.mask_options import DEFAULT_MARGIN, parse_margin, validate_fill, validate_mask_mode

MAX_DISTANCE = 254  # the farthest margin, in pixels, that a uint8 lung distance map holds (255 = farther)


def margin_to_pixels(margin, width, pixel_scale=1.0):
    """Margin in pixels for an image `width` pixels wide.

    Args:
        margin: see `tfcxr.mask_options.parse_margin`.
        width: int or scalar tensor, width in pixels of the image the mask is applied to.
        pixel_scale: pixels of that image per margin pixel (a pixel margin is multiplied by it).

    Returns:
        int32 scalar tensor >= 0; a constant when the width (fraction margin) or the pixel scale (pixel
        margin) is a Python number.
    """
    unit, value = parse_margin(margin)
    factor = pixel_scale if unit == "px" else width
    if isinstance(factor, (int, float)):  # known now: a constant, so `dilate` can unroll its loops
        return tf.constant(int(np.round(np.float32(value) * np.float32(factor))), tf.int32)  # as TF rounds
    return tf.cast(tf.round(value * tf.cast(factor, tf.float32)), tf.int32)


def image_width(image):
    """Width of `image` (..., W, C): a Python int when the static shape has it, else a scalar tensor."""
    width = image.shape[-2]
    return int(width) if width is not None else tf.shape(image)[-2]


def _as_batch(x):
    """[H, W, 1] or [N, H, W, 1] -> ([N, H, W, 1], was_single)."""
    rank = x.shape.rank
    if rank == 3:
        return x[tf.newaxis], True
    if rank == 4:
        return x, False
    raise ValueError(
        "Expected an image of shape (height, width, 1) or (batch, height, width, 1). "
        f"Received: shape={x.shape}"
    )


def _run_ids(background):
    """Id of each horizontal run of equal pixels, flattened row-major.

    background: bool (rows, width). Returns int32 (rows * width,), ids 0, 1, ...
    in order; a run never crosses a row end.
    """
    changes = tf.not_equal(background[:, 1:], background[:, :-1])
    starts = tf.concat([tf.ones_like(background[:, :1]), changes], axis=1)
    return tf.cumsum(tf.reshape(tf.cast(starts, tf.int32), [-1])) - 1


def _propagate_along_runs(reach, background, run_ids):
    """Spread `reach` along each horizontal run of background pixels.

    reach, background: bool (rows, width); run_ids from `_run_ids(background)`.
    Returns bool (rows, width).
    """
    run_reach = tf.math.segment_max(tf.reshape(tf.cast(reach, tf.int32), [-1]), run_ids)
    spread = tf.reshape(tf.gather(run_reach, run_ids), tf.shape(background)) > 0
    return spread & background


def fill_holes(mask, max_iterations=64):
    """Fill holes: background pixels not 4-connected to the image border.

    Exact flood fill from the border through background, done with alternating
    row and column passes (each spreads along a whole run at once), so it
    converges in a few passes for lung-shaped masks.

    Args:
        mask: float32 (batch, height, width, 1) in {0, 1}.
        max_iterations: cap on row+column pass pairs.

    Returns:
        float32 (batch, height, width, 1) in {0, 1}.
    """
    return tf.cast(_fill_holes_bool(mask > 0.5, max_iterations), tf.float32)


def _fill_holes_bool(mask, max_iterations=64):
    """`fill_holes` on bool (batch, height, width, 1) -> bool, same shape."""
    background = ~mask[..., 0]  # (batch, height, width)
    shape = tf.shape(background)
    border = tf.pad(
        tf.zeros([shape[0], shape[1] - 2, shape[2] - 2], tf.bool),
        [[0, 0], [1, 1], [1, 1]],
        constant_values=True,
    )
    reach = background & border

    rows_bg = tf.reshape(background, [-1, shape[2]])  # (batch * height, width)
    cols_bg = tf.reshape(tf.transpose(background, [0, 2, 1]), [-1, shape[1]])
    row_runs, col_runs = _run_ids(rows_bg), _run_ids(cols_bg)  # computed once

    def body(reach, _, iteration):
        rows = _propagate_along_runs(tf.reshape(reach, [-1, shape[2]]), rows_bg, row_runs)
        rows = tf.reshape(rows, shape)
        cols = _propagate_along_runs(
            tf.reshape(tf.transpose(rows, [0, 2, 1]), [-1, shape[1]]), cols_bg, col_runs
        )
        new = tf.transpose(tf.reshape(cols, [shape[0], shape[2], shape[1]]), [0, 2, 1])
        new.set_shape(background.shape)
        changed = tf.reduce_any(tf.not_equal(new, reach))
        return new, changed, iteration + 1

    reach, _, _ = tf.while_loop(
        lambda reach, changed, iteration: changed & (iteration < max_iterations),
        body,
        (reach, tf.constant(True), tf.constant(0)),
    )
    return ~reach[..., tf.newaxis]


def lung_boxes(mask, margin_px):
    """One box per lung: left and right bounding boxes grown by `margin_px`.

    The mask is split at the emptiest column of the central half of the image
    (ties: the one nearest the centre). A side without mask pixels gives no box.

    Args:
        mask: float32 (batch, height, width, 1) in {0, 1}, or bool.
        margin_px: int32 scalar tensor, pixels added on every side of each box.

    Returns:
        float32 (batch, height, width, 1) in {0, 1}: union of the two boxes.
    """
    m = mask[..., 0] if mask.dtype == tf.bool else mask[..., 0] > 0.5  # (batch, height, width)
    lung = tf.cast(m, tf.float32)  # one pass; the projections below are matmuls over it
    height, width = tf.shape(m)[1], tf.shape(m)[2]
    column_counts = tf.cast(tf.reduce_sum(lung, axis=1), tf.int32)  # (batch, width); float sums exact < 2**24
    lo, hi = width // 4, width - width // 4
    cols = tf.range(width)
    central = (cols >= lo) & (cols < hi)
    # Prefer empty columns, then columns closest to the centre.
    distance = tf.abs(2 * cols - width)
    score = column_counts * (4 * width) + distance[tf.newaxis]
    score = tf.where(central[tf.newaxis], score, tf.int32.max)
    split = tf.argmin(score, axis=1, output_type=tf.int32)  # (batch,)

    left_side = cols[tf.newaxis, :] < split[:, tf.newaxis]  # (batch, width)
    sides = tf.stack([left_side, ~left_side], axis=1)  # (batch, 2, width): left, right
    has_row = tf.matmul(lung, tf.cast(sides, tf.float32), transpose_b=True) > 0  # (batch, height, 2)
    has_col = sides & (column_counts > 0)[:, tf.newaxis, :]  # (batch, 2, width)
    big = tf.int32.max // 2
    rows = tf.range(height)[tf.newaxis, :, tf.newaxis]  # (1, height, 1)
    top = tf.reduce_min(tf.where(has_row, rows, big), axis=1) - margin_px  # (batch, 2)
    bottom = tf.reduce_max(tf.where(has_row, rows, -big), axis=1) + margin_px
    at = cols[tf.newaxis, tf.newaxis, :]  # (1, 1, width)
    left = tf.reduce_min(tf.where(has_col, at, big), axis=2) - margin_px  # (batch, 2)
    right = tf.reduce_max(tf.where(has_col, at, -big), axis=2) + margin_px
    in_rows = (rows >= top[:, tf.newaxis, :]) & (rows <= bottom[:, tf.newaxis, :])  # (batch, height, 2)
    in_cols = (at >= left[:, :, tf.newaxis]) & (at <= right[:, :, tf.newaxis])  # (batch, 2, width)
    # The union of the two boxes as one matmul of their row and column indicators: counts 0, 1 or 2 (overlap).
    boxes = tf.matmul(tf.cast(in_rows, tf.float32), tf.cast(in_cols, tf.float32))  # (batch, height, width)
    return tf.minimum(boxes, 1.0)[..., tf.newaxis]


def _region(lung, mode, radius, fill_lung_holes):
    """Kept region of a batched bool mask: bool (batch, H, W, 1)."""
    if mode == "original":
        return tf.ones_like(lung)
    if mode == "box":
        return lung_boxes(lung, radius) > 0.5
    region = _fill_holes_bool(lung) if fill_lung_holes else lung
    if mode in ("loose", "inverse"):
        region = dilate_bool(region, radius)
    return ~region if mode == "inverse" else region


def _binary(lung_mask, rank):
    """bool/uint8/float mask with or without the channel axis -> bool of rank `rank` (> 0.5 = lung)."""
    lung_mask = tf.convert_to_tensor(lung_mask)
    if lung_mask.shape.rank == rank - 1:
        lung_mask = lung_mask[..., tf.newaxis]  # add the channel axis
    if lung_mask.dtype == tf.bool:
        return lung_mask
    if lung_mask.dtype.is_integer:
        return lung_mask > 0
    return lung_mask > 0.5


def mask_image(image, lung_mask, mode, radius, fill, fill_lung_holes):
    """Mask `image` by `mode` with a margin of `radius` pixels; the arguments are not validated.

    The step shared by `apply_mask` and `tfcxr.mask_spec.MaskSpec` (which work out `radius`).

    Args:
        image: float32 (H, W, 1) or (N, H, W, 1) in [0, 1].
        lung_mask: bool/uint8/float, same size, with or without the channel axis; > 0.5 = lung.
        mode: one of `tfcxr.mask_options.MASK_MODES`.
        radius: int32 scalar tensor >= 0, pixels of `image`.
        fill: `"zero"` or `"mean"`.
        fill_lung_holes: fill holes in the lung mask first (`tight`, `loose`, `inverse`).

    Returns:
        float32, same shape as `image`, in [0, 1].
    """
    lung = _binary(lung_mask, image.shape.rank)
    if lung.shape.rank != image.shape.rank:
        raise ValueError(
            "`image` and `lung_mask` must both be single or both batched. "
            f"Received: image.shape={image.shape}, lung_mask.shape={lung.shape}"
        )
    batch, single = _as_batch(lung)
    region = _region(batch, mode, radius, fill_lung_holes)
    return keep_region(image, region[0] if single else region, fill)


def keep_region(image, region, fill):
    """`image` inside `region`, the fill outside: float32 image, bool region of its shape, `"zero"` or `"mean"`."""
    if fill == "zero":
        return tf.where(region, image, tf.zeros_like(image))
    mean = tf.reduce_mean(image, axis=[-3, -2, -1], keepdims=True)
    return tf.where(region, image, mean)


def as_distance_map(lung_distance):
    """A lung distance map as uint8 (any shape): another integer type is saturated (255 = farther than any margin)."""
    lung_distance = tf.convert_to_tensor(lung_distance)
    return lung_distance if lung_distance.dtype == tf.uint8 else tf.saturate_cast(lung_distance, tf.uint8)


def mask_by_distance(image, lung_distance, mode, radius, fill):
    """Mask a batch by `mode` from its lung distance maps (prepared data); the arguments are not validated.

    The distance map replaces the dilation: `loose` keeps the pixels within `radius` of the lungs
    (an exact disk, not the octagon of `dilate`), `inverse` the others; `tight` keeps distance 0.

    Args:
        image: float32 (N, H, W, 1) in [0, 1].
        lung_distance: uint8 (N, H, W, 1) (other integer types are saturated to it), distance in whole
            pixels of `image` from each pixel to the nearest lung pixel (0 on the lung, 255 = farther or no lung).
        mode: one of `tfcxr.mask_options.MASK_MODES`.
        radius: int32 scalar tensor in [0, MAX_DISTANCE], the margin in pixels of `image`.
        fill: `"zero"` or `"mean"`.

    Returns:
        float32 (N, H, W, 1) in [0, 1].
    """
    if mode == "original":
        return image
    lung_distance = as_distance_map(lung_distance)
    if mode == "box":
        region = lung_boxes(lung_distance == 0, radius) > 0.5
    elif mode == "tight":
        region = lung_distance == 0
    else:
        region = lung_distance <= tf.cast(tf.clip_by_value(radius, 0, MAX_DISTANCE), tf.uint8)
        region = ~region if mode == "inverse" else region
    return keep_region(image, region, fill)


def region_mask(lung_mask, mode, margin=DEFAULT_MARGIN, fill_lung_holes=True):
    """The region kept by `mode`, as a float mask.

    Args:
        lung_mask: bool or numeric (height, width[, 1]) or (batch, height, width, 1);
            nonzero (> 0.5 for floats) = lung.
        mode: one of `tfcxr.mask_options.MASK_MODES`.
        margin: see `tfcxr.mask_options.parse_margin`, pixels of this mask; used by `loose`, `box` and `inverse`.
        fill_lung_holes: fill holes in the lung mask first (`tight`, `loose`, `inverse`).

    Returns:
        float32 with the batch rank of the input and a trailing channel axis:
        (height, width, 1) or (batch, height, width, 1), in {0, 1}.
    """
    validate_mask_mode(mode)
    parse_margin(margin)
    lung_mask = tf.convert_to_tensor(lung_mask)
    if lung_mask.shape.rank == 2:
        lung_mask = lung_mask[..., tf.newaxis]
    batch, single = _as_batch(_binary(lung_mask, lung_mask.shape.rank))
    region = tf.cast(_region(batch, mode, margin_to_pixels(margin, image_width(batch)), fill_lung_holes), tf.float32)
    return region[0] if single else region


def apply_mask(image, lung_mask, mode, margin=DEFAULT_MARGIN, fill="zero", fill_lung_holes=True):
    """Mask a chest X-ray to its lungs (or, `inverse`, remove them) at the image's own resolution.

    Args:
        image: float32 (height, width, 1) or (batch, height, width, 1) in [0, 1].
        lung_mask: bool, uint8 or float, same height and width as `image`, with or
            without the channel axis; > 0.5 (True, 1 or 255 for uint8) = lung. Ignored for `original`.
        mode: one of `tfcxr.mask_options.MASK_MODES`.
        margin: `loose` dilation radius / `box` margin / `inverse` dilation: fraction of the image
            width in [0, 1) or pixels OF THIS IMAGE (`int` or `"11px"`).
        fill: `"zero"` or `"mean"` (each image's own mean intensity) outside the region.
        fill_lung_holes: fill holes in the lung mask first (`tight`, `loose`, `inverse`).

    Returns:
        float32, same shape as `image`, in [0, 1].
    """
    validate_mask_mode(mode)
    validate_fill(fill)
    parse_margin(margin)
    image = tf.convert_to_tensor(image, tf.float32)
    if mode == "original":
        return image
    radius = margin_to_pixels(margin, image_width(image))
    return mask_image(image, lung_mask, mode, radius, fill, fill_lung_holes)
