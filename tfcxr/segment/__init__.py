"""Lung segmentation with SAM-style models (LiteMedSAM, ViT SAM/MedSAM) in TensorFlow.

Heavy imports (tensorflow, tf_keras, transformers) happen on first use of an attribute, not at import time:

    from tfcxr.segment import load_segmenter
    model = load_segmenter("litemedsam")
"""

_LAZY = {
    "SamLungModel": "model",
    "load_segmenter": "loading",
    "available_presets": "presets",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
