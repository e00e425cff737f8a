"""Export the float signature of a run to ONNX with tf2onnx, and check it with onnxruntime.

The ONNX graph is the classifier plus the No Finding score:

    inputs:  ``images``        float32 (batch, S, S, 1) in [0, 1], already masked (dynamic batch)
    outputs: ``probabilities`` float32 (batch, 5) in ``tfcxr.labels.TARGETS`` order
             ``no_finding``    float32 (batch,)

The run's metadata (image size, mask mode, margin, fill, labels, ...) is stored as JSON in the model's
``metadata_props`` under the key ``tfcxr``, so an ``.onnx`` file is self-describing (see
:class:`tfcxr.serving.onnx_predictor.OnnxPredictor`). Decoding and masking stay outside the graph.
"""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np

from tfcxr.atomic import write_bytes_atomic
from tfcxr.export.savedmodel import RunInfo, load_classifier, read_run

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
METADATA_KEY = "tfcxr"
INPUT_NAME = "images"
OUTPUT_NAMES = ("probabilities", "no_finding")


def _require_tf2onnx():
    try:
        import tf2onnx
    except ImportError as err:  # pragma: no cover - tf2onnx is a core dependency
        raise ImportError("ONNX export needs tf2onnx: `pip install tf2onnx onnx onnxruntime`") from err
    return tf2onnx


def classifier_function(classifier, info: RunInfo):
    """The float graph to convert: images (batch, S, S, 1) -> {"probabilities", "no_finding"}."""
    import tensorflow as tf

    from tfcxr.scoring import no_finding_score

    spec = tf.TensorSpec([None, info.image_size, info.image_size, 1], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def classify(images):
        probabilities = tf.cast(classifier(images, training=False), tf.float32)  # (batch, 5)
        return {
            "probabilities": probabilities,
            "no_finding": no_finding_score(probabilities, method=info.no_finding_method),
        }

    return classify, spec


def convert(classifier, info: RunInfo, opset: int = DEFAULT_OPSET):
    """Keras classifier -> `onnx.ModelProto` with the run metadata attached (checked by `onnx.checker`)."""
    import onnx

    if int(opset) < 17:
        raise ValueError(f"`opset` must be >= 17. Received: opset={opset!r}")
    tf2onnx = _require_tf2onnx()
    classify, spec = classifier_function(classifier, info)
    model_proto, _ = tf2onnx.convert.from_function(classify, input_signature=[spec], opset=int(opset))
    names = tuple(output.name for output in model_proto.graph.output)
    if sorted(names) != sorted(OUTPUT_NAMES):
        raise RuntimeError(f"tf2onnx produced outputs {names}; expected {OUTPUT_NAMES}")
    entry = model_proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(dict(info.metadata(), opset=int(opset)))
    onnx.checker.check_model(model_proto)
    return model_proto


def export_onnx(rundir, out_dir, model_name: str = "tfcxr", opset: int = DEFAULT_OPSET) -> pathlib.Path:
    """Write ``<out_dir>/<model_name>.onnx`` for the run in `rundir`; return its path."""
    info = read_run(rundir)
    model_proto = convert(load_classifier(info), info, opset=opset)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{model_name}.onnx"
    write_bytes_atomic(path, model_proto.SerializeToString())
    logger.info("Wrote %s (opset %d, %.1f MB)", path, opset, path.stat().st_size / 1e6)
    return path


def read_metadata(onnx_path) -> dict:
    """The tfcxr metadata stored in an exported ``.onnx`` file (without loading the weights into a session)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise ValueError(f"{onnx_path}: no `{METADATA_KEY}` metadata; not exported by tfcxr.export")


def run_onnx(onnx_path, images, providers=("CPUExecutionProvider",)) -> dict:
    """Run an exported ``.onnx`` with onnxruntime on float32 (batch, S, S, 1) images -> {output name: np.ndarray}."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=list(providers))
    outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.asarray(images, np.float32)})
    return dict(zip(OUTPUT_NAMES, outputs))


def max_abs_diff(outputs, reference) -> dict:
    """{name: max |outputs[name] - reference[name]|} over OUTPUT_NAMES (parity threshold: 1e-4)."""
    return {name: float(np.max(np.abs(np.asarray(outputs[name]) - np.asarray(reference[name]))))
            for name in OUTPUT_NAMES}
