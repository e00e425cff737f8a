"""Deployment of trained tfcxr classifiers: SavedModel -> ONNX -> TensorRT (docs/architecture.md).

- :mod:`tfcxr.export.savedmodel`: a SavedModel in the TF Serving layout with a bytes signature
  (``serving_default``) and a float signature (``predict_images``).
- :mod:`tfcxr.export.onnx`: the float signature as ONNX (tf2onnx, opset >= 17), checked with onnxruntime.
- :mod:`tfcxr.export.tensorrt`: a TensorRT engine built from the ONNX (``tfcxr[tensorrt]`` extra).
- :mod:`tfcxr.export.serving_layout`: ``<out>/<model_name>/<version>/`` and the ``models.config`` of TF Serving.

CLI: ``python -m tfcxr.export RUNDIR --format savedmodel|onnx|tensorrt --out DIR``.
"""
