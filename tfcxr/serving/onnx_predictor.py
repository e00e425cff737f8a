"""A lightweight deployment option: the exported ``.onnx`` on onnxruntime (CPU), no TF Serving.

    from tfcxr.serving.onnx_predictor import OnnxPredictor
    predictor = OnnxPredictor("export/onnx/tfcxr.onnx")
    result = predictor.predict(["a.png", "b.jpg"], mask_paths=["a.png", "b.png"])  # masks for masked runs
    result["probabilities"]  # float32 (batch, 5) in TARGETS order; result["no_finding"] (batch,)

The network runs on onnxruntime. Decoding, masking and resizing reuse the TF ops of the serving graph
(:func:`tfcxr.export.serving_module.prepare_image`, the training pipeline's own steps), run eagerly, so the
inputs match the SavedModel and training bit for bit. The run's mask mode, margin, fill and image size come from
the ``tfcxr`` metadata stored in the ``.onnx`` file.
"""

from __future__ import annotations

import pathlib

import numpy as np


class OnnxPredictor:
    """File paths -> probabilities + No Finding score with onnxruntime.

    Args:
        onnx_path: a file written by ``python -m tfcxr.export RUNDIR --format onnx``.
        providers: onnxruntime execution providers (default CPU).
        batch_size: images per onnxruntime call.
        segmenter: optional object with ``serving_fn`` (see ``tfcxr.export.segmenter.load_serving_segmenter``)
            that makes lung masks for masked runs when no mask files are given.
    """

    def __init__(self, onnx_path, providers=("CPUExecutionProvider",), batch_size: int = 16, segmenter=None):
        import onnxruntime as ort

        from tfcxr.export.onnx import INPUT_NAME, OUTPUT_NAMES, read_metadata
        from tfcxr.export.savedmodel import RunInfo

        self.path = pathlib.Path(onnx_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: ONNX model not found")
        meta = read_metadata(self.path)
        self.info = RunInfo(
            rundir=pathlib.Path(meta["run"]), model_path=self.path, image_size=int(meta["image_size"]),
            mask=meta["mask"], margin=meta["margin"], fill=meta["fill"], backbone=meta["backbone"],
            no_finding_method=meta["no_finding_method"],
        )
        self.labels = tuple(meta["labels"])
        self.batch_size = int(batch_size)
        self.segmenter = segmenter
        self._session = ort.InferenceSession(str(self.path), providers=list(providers))
        self._input, self._outputs = INPUT_NAME, list(OUTPUT_NAMES)

    def predict_images(self, images) -> dict:
        """images float32 (batch, S, S, 1) in [0, 1], already masked -> {"probabilities", "no_finding"}."""
        images = np.asarray(images, np.float32)
        size = self.info.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 1) or len(images) == 0:
            raise ValueError(f"`images` must be (batch >= 1, {size}, {size}, 1) float32. Received: {images.shape}")
        parts = [self._session.run(self._outputs, {self._input: images[i:i + self.batch_size]})
                 for i in range(0, len(images), self.batch_size)]
        return {name: np.concatenate([part[k] for part in parts]) for k, name in enumerate(self._outputs)}

    def load(self, path, mask_path=None):
        """One file (and its mask file) -> float32 (S, S, 1), as the serving graph prepares it."""
        import tensorflow as tf

        from tfcxr.data.io import ImageReadError
        from tfcxr.export.serving_module import prepare_image

        if self.info.needs_mask and mask_path is None and self.segmenter is None:
            raise ValueError(
                f"{self.path}: the run uses mask={self.info.mask!r}; pass `mask_paths` or a `segmenter`"
            )
        try:
            image_bytes = tf.constant(pathlib.Path(path).read_bytes())
            mask_bytes = tf.constant(pathlib.Path(mask_path).read_bytes()) if mask_path is not None else None
            return prepare_image(image_bytes, self.info, mask_bytes, segmenter=self.segmenter).numpy()
        except (OSError, tf.errors.InvalidArgumentError) as err:
            raise ImageReadError(path, str(getattr(err, "message", err)).strip().splitlines()[-1]) from None

    def predict(self, paths, mask_paths=None) -> dict:
        """Image files (PNG/JPEG) -> {"probabilities" (batch, 5), "no_finding" (batch,), "labels" (5 names)}."""
        paths = list(paths)
        masks = list(mask_paths) if mask_paths is not None else [None] * len(paths)
        if len(masks) != len(paths):
            raise ValueError(f"Got {len(paths)} images but {len(masks)} masks: give one mask per image")
        images = np.stack([self.load(path, mask) for path, mask in zip(paths, masks)])  # (batch, S, S, 1)
        return dict(self.predict_images(images), labels=self.labels)
