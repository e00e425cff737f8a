"""`MaskSpec`: how a run masks its images (mode, margin, fill, training resolution S), the one owner of these settings.

Training (`tfcxr.config.TrainConfig`), the input pipeline (`tfcxr.data.pipeline.PipelineConfig`), the
saved model's metadata and export (`tfcxr.export.savedmodel.RunInfo`) all hold one `MaskSpec`; the
`mask_spec_properties` decorator gives them the flat names (`mask`, `margin`, `fill`, `image_size`)
as read-only views of it. Run directories' config.yaml store it flat (`FLAT_KEYS`) or nested under
`mask_spec:` (`SPEC_KEY`); `MaskSpec.from_config` reads both.

Margin `r` (values and parsing: `tfcxr.mask_options`):
    - a float in [0, 1) is a fraction of the image width (default 0.05): resolution-independent,
      about 11 px at 224 px, 51 px on a 1024-px source, whichever resolution the mask is applied at.
    - `"Npx"` (or an int N) is N pixels AT THE TRAINING RESOLUTION (`MaskSpec.image_size`, the
      classifier input S). Where the mask is applied at source resolution (PNG sources in
      `tfcxr.data.pipeline`, export's `prepare_image`), N is scaled by the source's longest
      side / S, so "11px" covers the same anatomy on every path. (`tfcxr.masking.apply_mask`
      itself, a low-level op, counts pixels of the image it is given.)

Two places to apply a mask (the ops: `tfcxr.masking`):
    - at source resolution (`MaskSpec.apply_at_source`): the mask is hole-filled here
      (`fill_holes`), then the image is resized. Used for image folders with a mask folder.
    - at training resolution (`MaskSpec.apply_at_training`): the image and its cleaned mask's
      distance map (stored when the dataset was prepared, `nih_cxr14/masked_*`) are resized to S
      first, then masked with one batched comparison: no hole filling and no dilation; `loose`
      keeps an exact disk of radius r around the lungs (the source path's octagon is within 8% of it).
"""

import dataclasses

import tensorflow as tf

from tfcxr.mask_options import DEFAULT_MARGIN, canonical_margin, validate_fill, validate_mask_mode
from tfcxr.masking import MAX_DISTANCE, image_width, margin_to_pixels, mask_by_distance, mask_image

DEFAULT_IMAGE_SIZE = 128
# Flat config keys of a `MaskSpec` (run dirs' config.yaml, export metadata): key -> MaskSpec field.
FLAT_KEYS = {"mask": "mode", "margin": "margin", "fill": "fill", "image_size": "image_size"}
SPEC_KEY = "mask_spec"


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """How a run masks its images; the one owner of these settings.

    Attributes:
        mode: one of `tfcxr.mask_options.MASK_MODES`.
        margin: `loose`/`box`/`inverse` margin: a fraction of the image width in [0, 1), or
            `"Npx"`, pixels at the training resolution `image_size` (see the module docstring).
            Stored canonically: a float or an `"Npx"` string.
        fill: background fill, one of `tfcxr.mask_options.FILL_MODES`.
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
        return mask_image(image, lung_mask, self.mode, radius, self.fill, fill_lung_holes=True)

    def apply_at_training(self, image, lung_distance):
        """Mask a batch already resized to the training resolution S, from its lung distance maps (prepared data).

        No hole filling and no dilation: the prepared dataset stores cleaned masks and their distance maps,
        so `loose` and `inverse` are one comparison with the margin (an exact disk), `tight` keeps distance 0.

        Args:
            image: float32 (batch, S, S, 1) in [0, 1].
            lung_distance: uint8 (batch, S, S, 1), distance in pixels at S from each pixel to the nearest lung
                pixel (0 on the lung, 255 = farther), e.g. from `tfcxr.data.image_ops.resize_prepared`.

        Returns:
            float32 (batch, S, S, 1) in [0, 1].

        Raises:
            ValueError: a `loose` or `inverse` margin of 255 px or more at S (a uint8 map holds up to 254).
        """
        image = tf.convert_to_tensor(image, tf.float32)
        if not self.needs_mask:
            return image
        radius = self.margin_pixels(image_width(image))
        known = tf.get_static_value(radius)
        if self.mode in ("loose", "inverse") and known is not None and known > MAX_DISTANCE:
            raise ValueError(f"margin={self.margin!r} is {known} px at {image_width(image)} px; distance maps hold "
                             f"margins up to {MAX_DISTANCE} px")
        return mask_by_distance(image, lung_distance, self.mode, radius, self.fill)


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
