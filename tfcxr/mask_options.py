"""The values a masking setting may take, and their validation (plain Python, no TensorFlow).

- `MASK_MODES`: `original`, `tight`, `loose`, `box`, `inverse` (what each keeps: `tfcxr.masking`).
- `FILL_MODES`: the background fill, `zero` or `mean` (the image's own mean).
- a margin: a float in [0, 1), a fraction of the image width (default `DEFAULT_MARGIN`), or a pixel
  count, an int N or the string `"Npx"`. Which image's pixels a pixel margin counts depends on
  who applies it: `tfcxr.mask_spec.MaskSpec` counts training pixels, `tfcxr.masking.apply_mask`
  the pixels of the image it is given.

The CLIs (`tfcxr.train`, `tfcxr.pretrain`) take their `--mask` and `--fill` choices from here;
`MaskSpec` and the mask ops validate with the functions below, so a bad value gives the same
error message (echoing it) on every path.
"""

import re

MASK_MODES = ("original", "tight", "loose", "box", "inverse")
FILL_MODES = ("zero", "mean")
DEFAULT_MARGIN = 0.05

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
