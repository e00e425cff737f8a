"""Box prompts for lung segmentation with a SAM-style model: the strategies, their settings and the prior boxes.

Three prompt strategies:

- ``gt``: one box per lung component of a ground-truth mask (optionally jittered outwards, MedSAM style).
- ``prior``: two fixed per-lung boxes in normalised image coordinates, fitted from training masks
  (median of each lung's normalised bounding box) or the defaults ``[30,30,125,220]`` and ``[131,30,226,220]``
  in 256-space.
- ``refine``: run the prior boxes, then re-prompt with the bounding box of each box's predicted lung component
  (the connected region around its highest logit) plus a margin, for 1-2 rounds
  (:func:`tfcxr.segment.tf_masks.decode_with_refine`).

Boxes are ``(x_min, y_min, x_max, y_max)`` float32. "Normalised" boxes are fractions of the image width/height.

This module owns the strategy names, :class:`InferenceSettings`, the priors (defaults, fitting, validation, the
version-1 priors file) and the box helpers of the ``gt`` prompt. Running the model on the boxes lives in
:mod:`tfcxr.segment.eager_masks` (eager, cleaned masks) and :mod:`tfcxr.segment.tf_masks` (pure TF, exportable);
the connected-component work on masks in :mod:`tfcxr.segment.mask_components`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from .mask_components import component_boxes, lung_components, mask_box

PROMPTS = ("gt", "prior", "refine")
PRIORS_FILENAME = "lung_priors.json"  # priors of a version-1 saved segmenter; later versions keep them in its JSON
DEFAULT_PRIOR_BOXES_256 = ((30.0, 30.0, 125.0, 220.0), (131.0, 30.0, 226.0, 220.0))
DEFAULT_PRIORS = np.asarray(DEFAULT_PRIOR_BOXES_256, np.float32) / 256.0  # (2, 4) normalised xyxy
DEFAULT_REFINE_MARGIN = 0.02  # fraction of the model input size (about 5 px at 256)


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
        definition: "" for the segmenter's own mask definition, or the name of one of its heads
            (``SamLungModel.heads``, :mod:`tfcxr.segment.heads`): the final boxes are decoded through it.
    """

    prompt: str = "refine"
    refine_rounds: int = 1
    margin: float = DEFAULT_REFINE_MARGIN
    threshold: float = 0.0
    clean: bool = True
    definition: str = ""

    def __post_init__(self):
        if self.prompt not in ("prior", "refine"):
            raise ValueError(f"`prompt` must be one of ('prior', 'refine'). Received: prompt={self.prompt!r}")
        if not (isinstance(self.refine_rounds, int) and 1 <= self.refine_rounds <= 3):
            raise ValueError(f"`refine_rounds` must be 1, 2 or 3. Received: refine_rounds={self.refine_rounds!r}")
        if not 0.0 <= float(self.margin) <= 0.25:
            raise ValueError(f"`margin` must be in [0, 0.25]. Received: margin={self.margin!r}")
        if not -20.0 <= float(self.threshold) <= 20.0:
            raise ValueError(f"`threshold` must be a logit in [-20, 20]. Received: threshold={self.threshold!r}")
        if self.definition:
            from .heads import check_head_name

            check_head_name(self.definition)

    @property
    def rounds(self) -> int:
        """Refinement rounds actually run: 0 for "prior"."""
        return self.refine_rounds if self.prompt == "refine" else 0

    def to_dict(self) -> dict:
        """The settings as a JSON-able mapping (:meth:`from_dict` reads it back)."""
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


def resolve(model, settings=None, priors=None) -> tuple["InferenceSettings", np.ndarray]:
    """The settings and (2, 4) priors to use: the given ones, else the model's own, else the defaults."""
    settings = settings if settings is not None else getattr(model, "inference", None) or InferenceSettings()
    priors = priors if priors is not None else getattr(model, "priors", None)
    return settings, check_priors(DEFAULT_PRIORS if priors is None else priors)


# ----------------------------------------------------------------------------------------------------------------
# Boxes of the gt prompt
# ----------------------------------------------------------------------------------------------------------------
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


def gt_normalized_boxes(mask, fallback) -> np.ndarray:
    """(2, 4) normalised boxes of a ground-truth (height, width) mask's lung components, padded by repeating the
    last one; `fallback` (e.g. the (2, 4) priors) if the mask is empty."""
    boxes = component_boxes(mask)
    if len(boxes) == 0:
        return fallback
    boxes = normalize_boxes(boxes, np.shape(mask)[:2])
    return np.concatenate([boxes, boxes[-1:]])[:2] if len(boxes) == 1 else boxes


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
