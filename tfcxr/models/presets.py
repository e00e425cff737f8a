"""Backbone presets: which Keras application, its input normalisation and sizes.

Weights metadata is data: the input range, the normalisation and the sizes travel
with each backbone name here, and `CxrPreprocessor` applies them inside the model
graph. The label order is `tfcxr.labels.TARGETS`, the one label vocabulary.

Normalisation modes (keras.applications docs, `imagenet_utils.preprocess_input`):
    caffe  ResNet50: 0-255 RGB -> BGR, minus ImageNet BGR means, no scaling.
    raw255 EfficientNetB0-B4: 0-255; the application rescales and normalises itself.
    torch  DenseNet121: 0-1, minus ImageNet means, divided by ImageNet stds.
    unit   tiny: 0-1 unchanged (single channel).
"""

PREPROCESSING_MODES = ("caffe", "raw255", "torch", "unit")

BACKBONE_PRESETS = {
    "tiny": {
        "application": None,
        "preprocessing": "unit",
        "channels": 1,
        "default_image_size": 128,
        "min_image_size": 16,
        "description": "4-block CNN (~0.1M parameters) for tests and the CPU demo.",
    },
    "resnet50": {
        "application": "ResNet50",
        "preprocessing": "caffe",
        "channels": 3,
        "default_image_size": 224,
        "min_image_size": 32,
        "description": "keras.applications.ResNet50 (He et al. 2016).",
    },
    "densenet121": {
        "application": "DenseNet121",
        "preprocessing": "torch",
        "channels": 3,
        "default_image_size": 224,
        "min_image_size": 32,
        "description": "keras.applications.DenseNet121 (CheXNet's backbone).",
    },
}
for _index, _size in enumerate((224, 240, 260, 300, 380)):
    BACKBONE_PRESETS[f"efficientnetb{_index}"] = {
        "application": f"EfficientNetB{_index}",
        "preprocessing": "raw255",
        "channels": 3,
        "default_image_size": _size,
        "min_image_size": 32,
        "description": f"keras.applications.EfficientNetB{_index} (Tan & Le 2019).",
    }

BACKBONES = tuple(BACKBONE_PRESETS)


def get_preset(backbone):
    """Preset dict for `backbone`, or a `ValueError` echoing the bad name."""
    if backbone not in BACKBONE_PRESETS:
        raise ValueError(f"`backbone` must be one of {BACKBONES}. Received: backbone={backbone!r}")
    return BACKBONE_PRESETS[backbone]
