"""CxrPreprocessor: gray [0, 1] images -> the backbone's expected input, in-graph."""

import keras
from keras import ops

from tfcxr.models.presets import PREPROCESSING_MODES

_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="tfcxr")
class CxrPreprocessor(keras.layers.Layer):
    """Convert gray images in [0, 1] to a backbone's input normalisation.

    Runs in float32 (also under mixed_float16) so it exports inside the serving
    graph and serving needs nothing else.

    Args:
        mode: one of `"caffe"`, `"raw255"`, `"torch"`, `"unit"` (see `presets.py`).
        channels: 1 (keep gray) or 3 (repeat gray to RGB).

    Call:
        images: (batch, height, width, 1) float32 in [0, 1].
    Returns:
        (batch, height, width, channels) float32.
    """

    def __init__(self, mode="unit", channels=3, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(f"`mode` must be one of {PREPROCESSING_MODES}. Received: mode={mode!r}")
        if channels not in (1, 3):
            raise ValueError(f"`channels` must be 1 or 3. Received: channels={channels!r}")
        self.mode = mode
        self.channels = channels

    def call(self, images):
        x = ops.cast(images, "float32")
        if self.channels == 3:
            x = ops.repeat(x, 3, axis=-1)  # (batch, height, width, 3)
        if self.mode == "caffe":
            # RGB -> BGR is a no-op for repeated gray; the per-channel means differ.
            mean = _CAFFE_BGR_MEAN if self.channels == 3 else (sum(_CAFFE_BGR_MEAN) / 3,)
            return x * 255.0 - ops.convert_to_tensor(mean, "float32")
        if self.mode == "raw255":
            return x * 255.0
        if self.mode == "torch":
            mean = _TORCH_MEAN if self.channels == 3 else (sum(_TORCH_MEAN) / 3,)
            std = _TORCH_STD if self.channels == 3 else (sum(_TORCH_STD) / 3,)
            return (x - ops.convert_to_tensor(mean, "float32")) / ops.convert_to_tensor(std, "float32")
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "channels": self.channels})
        return config
