"""Lung masking of chest X-rays in pure TensorFlow ops.

One `MaskSpec` (mode, margin, fill, image size) describes the masking of a run. Training
(`tfcxr.config.TrainConfig`), the input pipeline (`tfcxr.data.pipeline.PipelineConfig`), the
saved model's metadata and export (`tfcxr.export.savedmodel.RunInfo`) all hold that one object.

Modes (`lung` is the union of both lungs):
    `original`  the image unchanged.
    `tight`     `image * lung`.
    `loose`     `image * dilate(lung, r)`, `r` = the margin.
    `box`       `image * boxes(lung, r)`: one axis-aligned box per lung, each lung's bounding
                box grown by `r` on every side.
    `inverse`   `image * (1 - dilate(lung, r))`: the lungs removed, a shortcut probe (what can a
                classifier learn outside the lungs?). With margin 0 it is the complement of
                `tight`; with the default margin (0.05) the complement of `loose`, so the lung
                edges are removed too. The fill goes where the lungs were.

Margin `r`:
    - a float in [0, 1) is a fraction of the image width (default 0.05): resolution-independent,
      about 11 px at 224 px, 51 px on a 1024-px source, whichever resolution the mask is applied at.
    - `"Npx"` (or an int N) is N pixels AT THE TRAINING RESOLUTION (`MaskSpec.image_size`, the
      classifier input S). Where the mask is applied at source resolution (PNG sources in
      `tfcxr.data.pipeline`, export's `prepare_image`), N is scaled by the source's longest
      side / S, so "11px" covers the same anatomy on every path. (`apply_mask` itself, a
      low-level op, counts pixels of the image it is given.)

Two places to apply a mask:
    - at source resolution (`MaskSpec.apply_at_source`, `apply_mask`): the mask is hole-filled
      here (`fill_holes`), then the image is resized. Used for image folders with a mask folder.
    - at training resolution (`MaskSpec.apply_at_training`): image and cleaned mask (holes
      filled when the dataset was prepared, `nih_cxr14/masked_*`) are resized to S first, then
      masked with cheap batched ops: no hole filling, the same dilation at S.

Dilation uses an octagon structuring element of inradius `r`: the Minkowski sum of horizontal,
vertical and two diagonal line segments, each computed with log2(r) shift-and-max steps. The
octagon is within 8% of a disk of radius `r` and costs O(H * W * log r) instead of
O(H * W * r^2) for an explicit disk (and measured faster than separable max-pooling on CPU).

`box` splits the mask into a left and a right lung at the emptiest mask column of the central
half of the image (the mediastinum), then takes the bounding box of each side. It assumes an
upright frontal view with one lung on each side.

Background fill is 0 (`fill="zero"`) or the image's own mean (`fill="mean"`). Everything is TF
ops: it runs eagerly, inside `tf.data.Dataset.map`, and in a `tf.function`/SavedModel, on
`(H, W, 1)` or batched `(N, H, W, 1)` inputs.
"""

import dataclasses
import re

import tensorflow as tf

MASK_MODES = ("original", "tight", "loose", "box", "inverse")
FILL_MODES = ("zero", "mean")
DEFAULT_MARGIN = 0.05
DEFAULT_IMAGE_SIZE = 128
# Flat config keys of a `MaskSpec` (run dirs' config.yaml, export metadata): key -> MaskSpec field.
FLAT_KEYS = {"mask": "mode", "margin": "margin", "fill": "fill", "image_size": "image_size"}
SPEC_KEY = "mask_spec"

_PX_PATTERN = re.compile(r"^\s*(\d+)\s*px\s*$")


def validate_mask_mode(mode):
    """Return `mode` or raise a `ValueError` echoing the bad value."""
    if mode not in MASK_MODES:
        raise ValueError(f"`mask` must be one of {MASK_MODES}. Received: mask={mode!r}")
    return mode


def validate_fill(fill):
    """Return `fill` or raise a `ValueError` echoing the bad value."""
    if fill not in FILL_MODES:
        raise ValueError(f"`fill` must be one of {FILL_MODES}. Received: fill={fill!r}")
    return fill


def parse_margin(margin):
    """Normalise a margin to `("fraction", float)` or `("px", int)`.

    Args:
        margin: float in [0, 1) (fraction of image width), non-negative `int`
            (pixels), or a string: `"0.05"` (fraction) or `"11px"` (pixels).

    Returns:
        `(unit, value)` with unit `"fraction"` or `"px"`.
    """
    bad = ValueError(
        "`margin` must be a fraction of the image width in [0, 1) such as 0.05, "
        f"or a pixel count such as 11 or '11px'. Received: margin={margin!r}"
    )
    if isinstance(margin, bool):
        raise bad
    if isinstance(margin, str):
        match = _PX_PATTERN.match(margin)
        if match:
            return "px", int(match.group(1))
        try:
            margin = float(margin)
        except ValueError:
            raise bad from None
        if margin >= 1 and margin.is_integer():
            return "px", int(margin)
    if isinstance(margin, int):
        if margin < 0:
            raise bad
        return "px", margin
    if isinstance(margin, float):
        if not 0.0 <= margin < 1.0:
            raise bad
        return "fraction", margin
    raise bad


def canonical_margin(margin):
    """`0.05` -> 0.05, `"11px"`, `11`, `"11"` -> "11px": the form written to configs."""
    unit, value = parse_margin(margin)
    return float(value) if unit == "fraction" else f"{value}px"


def margin_to_pixels(margin, width, pixel_scale=1.0):
    """Margin in pixels for an image `width` pixels wide.

    Args:
        margin: see `parse_margin`.
        width: int or scalar tensor, width in pixels of the image the mask is applied to.
        pixel_scale: pixels of that image per margin pixel (a pixel margin is multiplied by it).

    Returns:
        int32 scalar tensor >= 0.
    """
    unit, value = parse_margin(margin)
    if unit == "px":
        if isinstance(pixel_scale, (int, float)) and pixel_scale == 1:
            return tf.constant(value, tf.int32)
        return tf.cast(tf.round(value * tf.cast(pixel_scale, tf.float32)), tf.int32)
    width = tf.cast(width, tf.float32)
    return tf.cast(tf.round(value * width), tf.int32)


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """How a run masks its images; the one owner of these settings.

    Attributes:
        mode: one of `MASK_MODES`.
        margin: `loose`/`box`/`inverse` margin: a fraction of the image width in [0, 1), or
            `"Npx"`, pixels at the training resolution `image_size` (see the module docstring).
            Stored canonically: a float or an `"Npx"` string.
        fill: background fill, one of `FILL_MODES`.
        image_size: training resolution S; images reach the classifier as (S, S, 1).
    """

    mode: str = "loose"
    margin: object = DEFAULT_MARGIN
    fill: str = "zero"
    image_size: int = DEFAULT_IMAGE_SIZE

    def __post_init__(self):
        validate_mask_mode(self.mode)
        validate_fill(self.fill)
        object.__setattr__(self, "margin", canonical_margin(self.margin))
        size = self.image_size
        try:
            valid = not isinstance(size, bool) and int(size) == float(size) and int(size) >= 8
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"`image_size` must be an integer >= 8. Received: image_size={size!r}")
        object.__setattr__(self, "image_size", int(size))

    @property
    def needs_mask(self) -> bool:
        """False for `original`: no lung mask is read."""
        return self.mode != "original"

    def replace(self, **changes) -> "MaskSpec":
        """A copy with some fields changed (validated); None values are ignored, and no change returns `self`."""
        changes = {key: value for key, value in changes.items() if value is not None}
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def resolve(cls, spec=None, default=None, *, mode=None, margin=None, fill=None, image_size=None) -> "MaskSpec":
        """The spec a config holds: `spec` (a MaskSpec, its dict form, or None for `default`, else `MaskSpec()`)
        with the non-None flat shorthands (`mask=`, `margin=`, `fill=`, `image_size=` of the configs) applied."""
        if spec is None:
            spec = default if default is not None else cls()
        elif not isinstance(spec, cls):
            spec = cls.from_dict(spec)  # the nested YAML form
        return spec.replace(mode=mode, margin=margin, fill=fill, image_size=image_size)

    def to_dict(self) -> dict:
        """`{"mode", "margin", "fill", "image_size"}`, YAML/JSON-safe."""
        return dataclasses.asdict(self)

    def to_flat(self) -> dict:
        """The flat config keys `{"mask", "margin", "fill", "image_size"}` (run dirs' config.yaml)."""
        values = self.to_dict()
        return {key: values[field] for key, field in FLAT_KEYS.items()}

    @classmethod
    def from_dict(cls, values) -> "MaskSpec":
        """Inverse of `to_dict`; also accepts the flat key `mask` for `mode`.

        Raises:
            ValueError: not a mapping, an unknown key, or a bad value (echoed).
        """
        if not isinstance(values, dict):
            raise ValueError(f"`{SPEC_KEY}` must be a mapping of {tuple(FLAT_KEYS.values())}. Received: {values!r}")
        fields = {FLAT_KEYS.get(key, key): value for key, value in values.items()}
        if "mask" in values and "mode" in values:
            raise ValueError(f"`{SPEC_KEY}`: give `mode` or `mask`, not both. Received: {values!r}")
        unknown = sorted(set(fields) - set(FLAT_KEYS.values()))
        if unknown:
            raise ValueError(f"`{SPEC_KEY}`: unknown key(s) {unknown}; known: {tuple(FLAT_KEYS.values())}")
        return cls(**{k: v for k, v in fields.items() if v is not None})

    @classmethod
    def from_config(cls, config, default=None) -> "MaskSpec":
        """Read a spec from a config mapping in either form.

        Forms (also one level down, inside a section such as `model:`):
            nested: `mask_spec: {mode: loose, margin: 0.05, fill: zero, image_size: 224}`
            flat:   `mask: loose`, `margin: 0.05`, `fill: zero`, `image_size: 224`
        A nested section wins; missing flat keys take `default`'s values (`MaskSpec()` if None).
        """
        default = default or cls()
        sections = [config] + [value for value in config.values() if isinstance(value, dict)]
        for section in sections:
            if isinstance(section.get(SPEC_KEY), dict):
                return default.replace(**cls.from_dict(section[SPEC_KEY]).to_dict())
        changes = {}
        for key, field in FLAT_KEYS.items():
            for section in sections:
                if key in section and not isinstance(section[key], dict):
                    changes[field] = section[key]
                    break
        return default.replace(**changes)

    def margin_pixels(self, width, pixel_scale=1.0):
        """int32 scalar tensor: the margin in pixels of an image `width` pixels wide.

        Args:
            width: int or scalar tensor, width of the (unpadded) image the mask is applied to.
            pixel_scale: pixels of that image per training pixel, e.g. longest side / S at source.
        """
        return margin_to_pixels(self.margin, width, pixel_scale)

    def apply_at_source(self, image, lung_mask):
        """Mask an image at its own (source) resolution, filling the mask's holes first.

        Args:
            image: float32 (H, W, 1) or (batch, H, W, 1) in [0, 1].
            lung_mask: bool/uint8/float, same size, with or without the channel axis; > 0.5 = lung.

        Returns:
            float32, same shape as `image`, in [0, 1]; resize it to `image_size` afterwards.
        """
        image = tf.convert_to_tensor(image, tf.float32)
        if not self.needs_mask:
            return image
        shape = tf.shape(image)
        height, width = shape[-3], shape[-2]
        scale = tf.cast(tf.maximum(height, width), tf.float32) / float(self.image_size)
        radius = self.margin_pixels(width, scale)
        return _mask_image(image, lung_mask, self.mode, radius, self.fill, fill_lung_holes=True)

    def apply_at_training(self, image, lung_mask, content_width=None):
        """Mask an image already resized to the training resolution, with a cleaned mask.

        No hole filling (the prepared dataset stores cleaned masks); dilation and boxes at S.

        Args:
            image: float32 (S, S, 1) or (batch, S, S, 1) in [0, 1].
            lung_mask: same size, > 0.5 = lung (e.g. the stored mask resized alongside the image).
            content_width: width in pixels of the image inside its padding (a fraction margin is a
                fraction of it); default the full width.

        Returns:
            float32, same shape as `image`, in [0, 1].
        """
        image = tf.convert_to_tensor(image, tf.float32)
        if not self.needs_mask:
            return image
        width = tf.shape(image)[-2] if content_width is None else content_width
        radius = self.margin_pixels(width)
        return _mask_image(image, lung_mask, self.mode, radius, self.fill, fill_lung_holes=False)


def mask_spec_properties(cls):
    """Class decorator for configs holding a `mask_spec: MaskSpec` field (put it above `@dataclass`).

    Adds read-only `mask`, `margin`, `fill` and `image_size` properties that read `mask_spec`, so
    the flat names stay readable while the spec is the only place the values live. Pair it with
    `dataclasses.InitVar` fields of those names to accept them as init shorthands.
    """
    for key, field in FLAT_KEYS.items():
        setattr(cls, key, property(lambda self, field=field: getattr(self.mask_spec, field),
                                   doc=f"`mask_spec.{field}`"))
    return cls


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


def _shift(x, dy, dx):
    """Shift `x` [N, H, W, C] by (dy, dx) pixels (int tensors), filling with 0."""
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    pad_top, pad_bottom = tf.maximum(dy, 0), tf.maximum(-dy, 0)
    pad_left, pad_right = tf.maximum(dx, 0), tf.maximum(-dx, 0)
    padded = tf.pad(x, [[0, 0], [pad_top, pad_bottom], [pad_left, pad_right], [0, 0]])
    shifted = padded[:, pad_bottom : pad_bottom + height, pad_right : pad_right + width, :]
    shifted.set_shape(x.shape)
    return shifted


def _dilate_segment(x, length, dy, dx):
    """Max over the segment {t * (dy, dx) : t in [-length, length]}.

    Shift-and-max doubling: covers 2 * length + 1 points in O(log length) steps.
    """
    span = 2 * length + 1

    def body(result, covered):
        step = tf.minimum(covered, span - covered)
        return tf.maximum(result, _shift(result, step * dy, step * dx)), covered + step

    result, _ = tf.while_loop(
        lambda result, covered: covered < span,
        body,
        (x, tf.constant(1, tf.int32)),
    )
    # `result` now covers t in [0, 2 * length]; recentre on t in [-length, length].
    return _shift(result, -length * dy, -length * dx)


def dilate(mask, radius):
    """Dilate a binary mask with an octagon of inradius `radius` (~ a disk).

    Args:
        mask: float32 (batch, height, width, 1) in {0, 1}.
        radius: int32 scalar tensor >= 0, pixels.

    Returns:
        float32 (batch, height, width, 1) in {0, 1}.
    """
    dtype = mask.dtype
    mask = tf.cast(mask, tf.uint8)  # the shift-and-max steps move 4x fewer bytes than float32 (~2x faster on CPU)
    radius = tf.cast(radius, tf.float32)
    # Regular octagon of inradius r: axis segments of half-length a and diagonal
    # segments of half-length b = a / sqrt(2), with a + 2b = r.
    axis = tf.cast(tf.round(radius / (1.0 + 2.0**0.5)), tf.int32)
    diagonal = tf.cast(tf.round((radius - tf.cast(axis, tf.float32)) / 2.0), tf.int32)
    one, zero = tf.constant(1, tf.int32), tf.constant(0, tf.int32)
    mask = _dilate_segment(mask, axis, zero, one)
    mask = _dilate_segment(mask, axis, one, zero)
    mask = _dilate_segment(mask, diagonal, one, one)
    return tf.cast(_dilate_segment(mask, diagonal, one, -one), dtype)


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
    background = mask[..., 0] < 0.5  # (batch, height, width)
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
    return tf.cast(~reach, tf.float32)[..., tf.newaxis]


def lung_boxes(mask, margin_px):
    """One box per lung: left and right bounding boxes grown by `margin_px`.

    The mask is split at the emptiest column of the central half of the image
    (ties: the one nearest the centre). A side without mask pixels gives no box.

    Args:
        mask: float32 (batch, height, width, 1) in {0, 1}.
        margin_px: int32 scalar tensor, pixels added on every side of each box.

    Returns:
        float32 (batch, height, width, 1) in {0, 1}: union of the two boxes.
    """
    m = mask[..., 0] > 0.5  # (batch, height, width)
    height, width = tf.shape(m)[1], tf.shape(m)[2]
    column_counts = tf.reduce_sum(tf.cast(m, tf.int32), axis=1)  # (batch, width)
    lo, hi = width // 4, width - width // 4
    cols = tf.range(width)
    central = (cols >= lo) & (cols < hi)
    # Prefer empty columns, then columns closest to the centre.
    distance = tf.abs(2 * cols - width)
    score = column_counts * (4 * width) + distance[tf.newaxis]
    score = tf.where(central[tf.newaxis], score, tf.int32.max)
    split = tf.argmin(score, axis=1, output_type=tf.int32)  # (batch,)

    rows = tf.range(height)
    left_side = cols[tf.newaxis, :] < split[:, tf.newaxis]  # (batch, width)
    out = tf.zeros_like(m)
    for side in (left_side, ~left_side):
        part = m & side[:, tf.newaxis, :]
        has_row = tf.reduce_any(part, axis=2)  # (batch, height)
        has_col = tf.reduce_any(part, axis=1)  # (batch, width)
        big = tf.int32.max // 2
        top = tf.reduce_min(tf.where(has_row, rows[tf.newaxis], big), axis=1) - margin_px
        bottom = tf.reduce_max(tf.where(has_row, rows[tf.newaxis], -big), axis=1) + margin_px
        left = tf.reduce_min(tf.where(has_col, cols[tf.newaxis], big), axis=1) - margin_px
        right = tf.reduce_max(tf.where(has_col, cols[tf.newaxis], -big), axis=1) + margin_px
        in_rows = (rows[tf.newaxis] >= top[:, tf.newaxis]) & (rows[tf.newaxis] <= bottom[:, tf.newaxis])
        in_cols = (cols[tf.newaxis] >= left[:, tf.newaxis]) & (cols[tf.newaxis] <= right[:, tf.newaxis])
        out |= in_rows[:, :, tf.newaxis] & in_cols[:, tf.newaxis, :]
    return tf.cast(out, tf.float32)[..., tf.newaxis]


def _region(lung_mask, mode, radius, fill_lung_holes):
    """Kept region of a batched float mask: float32 (batch, H, W, 1) in {0, 1}."""
    if mode == "original":
        return tf.ones_like(lung_mask)
    if mode == "box":
        return lung_boxes(lung_mask, radius)
    region = fill_holes(lung_mask) if fill_lung_holes else lung_mask
    if mode in ("loose", "inverse"):
        region = dilate(region, radius)
    return 1.0 - region if mode == "inverse" else region


def _binary(lung_mask, rank):
    """bool/uint8/float mask with or without the channel axis -> float32 {0, 1} of rank `rank`."""
    lung_mask = tf.convert_to_tensor(lung_mask)
    if lung_mask.shape.rank == rank - 1:
        lung_mask = lung_mask[..., tf.newaxis]  # add the channel axis
    return tf.cast(tf.cast(lung_mask, tf.float32) > 0.5, tf.float32)


def _mask_image(image, lung_mask, mode, radius, fill, fill_lung_holes):
    """`image` float32 (H, W, 1) or (N, H, W, 1) masked by `mode` with a margin of `radius` px."""
    lung = _binary(lung_mask, image.shape.rank)
    if lung.shape.rank != image.shape.rank:
        raise ValueError(
            "`image` and `lung_mask` must both be single or both batched. "
            f"Received: image.shape={image.shape}, lung_mask.shape={lung.shape}"
        )
    batch, single = _as_batch(lung)
    region = _region(batch, mode, radius, fill_lung_holes)
    region = region[0] if single else region
    if fill == "zero":
        return image * region
    mean = tf.reduce_mean(image, axis=[-3, -2, -1], keepdims=True)
    return image * region + mean * (1.0 - region)


def region_mask(lung_mask, mode, margin=DEFAULT_MARGIN, fill_lung_holes=True):
    """The region kept by `mode`, as a float mask.

    Args:
        lung_mask: bool or numeric (height, width[, 1]) or (batch, height, width, 1);
            nonzero (> 0.5 for floats) = lung.
        mode: one of `MASK_MODES`.
        margin: see `parse_margin`, pixels of this mask; used by `loose`, `box` and `inverse`.
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
    region = _region(batch, mode, margin_to_pixels(margin, tf.shape(batch)[2]), fill_lung_holes)
    return region[0] if single else region


def apply_mask(image, lung_mask, mode, margin=DEFAULT_MARGIN, fill="zero", fill_lung_holes=True):
    """Mask a chest X-ray to its lungs (or, `inverse`, remove them) at the image's own resolution.

    Args:
        image: float32 (height, width, 1) or (batch, height, width, 1) in [0, 1].
        lung_mask: bool, uint8 or float, same height and width as `image`, with or
            without the channel axis; > 0.5 (True, 1 or 255 for uint8) = lung. Ignored for `original`.
        mode: one of `MASK_MODES`.
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
    radius = margin_to_pixels(margin, tf.shape(image)[-2])
    return _mask_image(image, lung_mask, mode, radius, fill, fill_lung_holes)
