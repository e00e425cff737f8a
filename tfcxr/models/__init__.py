"""tfcxr classifiers (keras-hub style: presets, preprocessor, backbones, task).

Importing this package registers the custom layers and losses, so
`keras.models.load_model("best.keras")` works afterwards.
"""

from tfcxr.models.backbones import WeightsUnavailableError, build_backbone, tiny_backbone
from tfcxr.models.classifier import backbone_layer, build_classifier, compile_classifier
from tfcxr.models.losses import LOSSES, WeightedBinaryCrossentropy, build_loss, positive_weights
from tfcxr.models.preprocessor import CxrPreprocessor
from tfcxr.models.presets import BACKBONE_PRESETS, BACKBONES, get_preset

__all__ = [
    "BACKBONES",
    "BACKBONE_PRESETS",
    "LOSSES",
    "CxrPreprocessor",
    "WeightedBinaryCrossentropy",
    "WeightsUnavailableError",
    "backbone_layer",
    "build_backbone",
    "build_classifier",
    "build_loss",
    "compile_classifier",
    "get_preset",
    "positive_weights",
    "tiny_backbone",
]
