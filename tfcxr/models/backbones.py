"""Backbones: feature extractors from keras.applications plus a tiny CPU CNN."""

import logging
import os

import keras

from tfcxr.models.presets import get_preset

logger = logging.getLogger(__name__)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched (e.g. no network)."""


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
