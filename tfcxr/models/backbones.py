"""Backbones: feature extractors from keras.applications plus a tiny CPU CNN."""

import json
import logging
import os

import keras

from tfcxr.models.presets import get_preset

logger = logging.getLogger(__name__)


# A file whose name ends with this holds the weights of a backbone alone (as written by
# `python -m tfcxr.pretrain`); `<name>.json` beside `<name>.weights.h5` holds its metadata.
BACKBONE_WEIGHTS_SUFFIX = "backbone.weights.h5"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched (e.g. no network)."""


def is_backbone_weights(path):
    """True when `path` names a backbone-only weights file (`*backbone.weights.h5`)."""
    return os.path.basename(str(path)).endswith(BACKBONE_WEIGHTS_SUFFIX)


def backbone_metadata_path(path):
    """`<dir>/<name>.json` for `<dir>/<name>.weights.h5`."""
    return str(path)[: -len(".weights.h5")] + ".json"


def save_backbone_weights(model, path, metadata):
    """Write a backbone's weights and their metadata (weights metadata is data).

    Args:
        model: the keras.Model returned by `build_backbone`.
        path: file name ending with `BACKBONE_WEIGHTS_SUFFIX`.
        metadata: JSON-ready dict; must hold "backbone" (its preset name).

    Returns:
        (weights path, metadata path) as strings.
    """
    from tfcxr.atomic import write_text_atomic

    if not is_backbone_weights(path):
        raise ValueError(f"`path` must end with {BACKBONE_WEIGHTS_SUFFIX!r}. Received: path={str(path)!r}")
    get_preset(metadata.get("backbone"))
    model.save_weights(str(path), overwrite=True)
    meta_path = backbone_metadata_path(path)
    write_text_atomic(meta_path, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return str(path), meta_path


def load_backbone_weights(model, path, backbone):
    """Load a `*backbone.weights.h5` file into a backbone built by `build_backbone`.

    Args:
        model: keras.Model from `build_backbone(backbone, ...)`.
        path: the weights file; its metadata JSON, when present, must name the same backbone.
        backbone: the preset name `model` was built for.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the metadata names another backbone, or the weights do not fit `model`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: backbone weights file not found.")
    meta_path = backbone_metadata_path(path)
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as handle:
            saved = json.load(handle).get("backbone")
        if saved != backbone:
            raise ValueError(
                f"{path}: these weights are for backbone={saved!r} (from {meta_path}). "
                f"Received: backbone={backbone!r}"
            )
    try:
        model.load_weights(str(path))
    except ValueError as error:
        raise ValueError(f"{path}: the weights do not fit backbone={backbone!r} ({error})") from None
    logger.info("loaded backbone weights from %s", path)


def tiny_backbone(image_size, channels=1, widths=(16, 32, 64, 96), name="tiny_backbone"):
    """A small CNN for tests and the CPU demo (about 0.1M parameters).

    Args:
        image_size: int, input height and width.
        channels: input channels.
        widths: filters of the four stride-2 conv blocks.

    Returns:
        keras.Model: (batch, image_size, image_size, channels) -> (batch, 2 * widths[-1]).
    """
    inputs = keras.Input((image_size, image_size, channels), name="pixels")
    x = inputs
    for index, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name=f"block{index}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{index}_bn")(x)
        x = keras.layers.Activation("relu", name=f"block{index}_relu")(x)
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{index}_conv2")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{index}_bn2")(x)
        x = keras.layers.Activation("relu", name=f"block{index}_relu2")(x)
    # (batch, image_size / 16, image_size / 16, widths[-1])
    # Average and max pooling: max pooling keeps small focal findings (nodules).
    outputs = keras.layers.Concatenate(name="avg_max_pool")(
        [keras.layers.GlobalAveragePooling2D(name="avg_pool")(x), keras.layers.GlobalMaxPooling2D(name="max_pool")(x)]
    )  # (batch, 2 * widths[-1])
    return keras.Model(inputs, outputs, name=name)


def build_backbone(backbone, image_size, weights=None):
    """Build a pooled feature extractor.

    Args:
        backbone: a name from `tfcxr.models.presets.BACKBONES`.
        image_size: int, input height and width.
        weights: `None` (random init), `"imagenet"`, or a path to a
            keras.applications "notop" weights file for this backbone.

    Returns:
        keras.Model: (batch, image_size, image_size, channels) -> (batch, features),
        channels from the preset.

    Raises:
        WeightsUnavailableError: ImageNet weights could not be downloaded.
        FileNotFoundError: `weights` is a path that does not exist.
    """
    preset = get_preset(backbone)
    if image_size < preset["min_image_size"]:
        raise ValueError(
            f"`image_size` must be >= {preset['min_image_size']} for backbone={backbone!r}. "
            f"Received: image_size={image_size!r}"
        )
    if preset["application"] is None:
        if weights is not None:
            raise ValueError(
                f"backbone='tiny' has no pretrained weights; use weights='none' or a classifier "
                f"checkpoint (.keras / .weights.h5). Received: weights={weights!r}"
            )
        return tiny_backbone(image_size, channels=preset["channels"])
    if weights not in (None, "imagenet") and not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights}: backbone weights file not found.")
    application = getattr(keras.applications, preset["application"])
    try:
        return application(
            include_top=False,
            weights=weights,
            input_shape=(image_size, image_size, preset["channels"]),
            pooling="avg",
        )
    except Exception as error:  # keras.utils.get_file raises a bare Exception when offline.
        if weights != "imagenet" or "fetch" not in str(error).lower():
            raise
        raise WeightsUnavailableError(
            f"Could not download ImageNet weights for backbone={backbone!r} ({error}). "
            "This machine may have no network. Use --weights none (random init), or "
            "--weights PATH with a local keras.applications notop weights file "
            "(e.g. ~/.keras/models/...) or a tfcxr classifier checkpoint (.keras)."
        ) from error
