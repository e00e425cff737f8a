"""tfcxr: segmentation-guided chest X-ray classification in TensorFlow/Keras."""

__version__ = "0.1.0"
