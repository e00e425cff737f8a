"""The segmenter's image encoder exported to ONNX and run with ONNX Runtime (an alternative embed backend).

``SamLungModel.set_embed_backend("onnx")`` swaps ``model.embed`` for :class:`OnnxImageEncoder`; the TF encoder
stays the reference (``set_embed_backend("tf")``). The export (tf2onnx, opset 17) is cached under
``tfcxr.segment.weights.cache_dir()/onnx/<kind>-<image_size>-<encoder fingerprint>.onnx``, keyed by
``tfcxr.segment.embedding_cache.model_fingerprint`` so changed weights never read a stale file, and written atomically.

TF's exact GELU uses ``Erfc``, which ONNX lacks: it is exported as ``1 + Erf(x / sqrt 2)`` (the same value as
``erfc(-x / sqrt 2)``) when the graph has TF's pattern, else as ``1 - Erf(z)``.
"""

from __future__ import annotations

import logging
import os
import pathlib

import numpy as np

logger = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "pixel_values"


def onnx_path(model) -> pathlib.Path:
    """Cache path of `model`'s image-encoder export (one per encoder weights and input size)."""
    from .embedding_cache import model_fingerprint
    from .weights import cache_dir

    return cache_dir() / "onnx" / f"{model.kind}-{model.image_size}-{model_fingerprint(model)}.onnx"


def _erfc_handler(ctx, node, name, args):
    """tf2onnx handler: ``Erfc(z)`` -> ``1 + Erf(x * c)`` for TF's GELU ``z = -x * c``, else ``1 - Erf(z)``."""
    from tf2onnx import utils

    del args
    source = ctx.get_node_by_output(node.input[0])
    output = node.output[0]
    ctx.remove_node(node.name)
    one = ctx.make_const(utils.make_name("one"), np.array(1.0, np.float32))
    if source is not None and source.type == "Mul":
        a, b = source.inputs
        negated, constant = (a, b) if a.type == "Neg" else (b, a)
        if negated.type == "Neg" and constant.is_const():
            scaled = ctx.make_node("Mul", [negated.input[0], constant.output[0]])
            erf = ctx.make_node("Erf", [scaled.output[0]])
            ctx.make_node("Add", [erf.output[0], one.output[0]], outputs=[output], name=name)
            return
    erf = ctx.make_node("Erf", [node.input[0]])
    ctx.make_node("Sub", [one.output[0], erf.output[0]], outputs=[output], name=name)


def export_encoder(model, path) -> pathlib.Path:
    """Export ``model``'s image encoder (pixel_values (N, S, S, 3) -> (N, 256, 64, 64)) to an ONNX file.

    Written atomically (``tfcxr.atomic.atomic_write``), so a killed export never leaves a half file in the cache.
    """
    import tensorflow as tf

    try:
        import tf2onnx
    except ImportError as err:  # pragma: no cover - depends on the installed extras
        raise ImportError("the onnx embed backend needs tf2onnx and onnxruntime: pip install 'tfcxr[export]'") from err
    from tfcxr.atomic import atomic_write

    s = model.image_size
    spec = [tf.TensorSpec([None, s, s, 3], tf.float32, name=INPUT_NAME)]
    function = tf.function(lambda pixel_values: model._embed_impl(pixel_values), input_signature=spec,
                           autograph=False)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=OPSET,
                                             custom_op_handlers={"Erfc": (_erfc_handler, [])})
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        handle.write(proto.SerializeToString())
    logger.info("Exported the %s image encoder to %s", model.name, path)
    return path


class OnnxImageEncoder:
    """ONNX Runtime session of a segmenter's image encoder; call it like ``SamLungModel.embed``.

    Args:
        model: a ``SamLungModel``; its encoder is exported once (cached, see :func:`onnx_path`).
        threads: intra-op threads; None for ``$TFCXR_ORT_THREADS`` or ONNX Runtime's default.
        path: ONNX file to use instead of the cache.
    """

    def __init__(self, model, threads: int | None = None, path=None):
        try:
            import onnxruntime as ort
        except ImportError as err:  # pragma: no cover - depends on the installed extras
            raise ImportError("the onnx embed backend needs onnxruntime: pip install 'tfcxr[export]'") from err
        self.path = pathlib.Path(path) if path is not None else onnx_path(model)
        self.reused = self.path.is_file()
        if not self.reused:
            export_encoder(model, self.path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = threads if threads is not None else int(os.environ.get("TFCXR_ORT_THREADS", "0"))
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def __call__(self, pixel_values) -> np.ndarray:
        """pixel_values float32 (N, S, S, 3) -> image embeddings float32 (N, 256, 64, 64)."""
        return self.session.run(None, {INPUT_NAME: np.asarray(pixel_values, np.float32)})[0]


__all__ = ["OnnxImageEncoder", "export_encoder", "onnx_path"]
