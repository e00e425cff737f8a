"""REST and gRPC clients against the exported model served in-process (and a real tensorflow_model_server if any).

The in-process servers decode exactly what TF Serving receives (the REST JSON with base64 bytes, the gRPC
TensorProtos) back into tensors and call the loaded SavedModel's signature, as TF Serving does.
"""

import base64
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf

import export_helpers as H
from tfcxr.export.savedmodel import run_savedmodel
from tfcxr.labels import TARGETS
from tfcxr.serving import client


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    run, version_dir = H.export_tiny(folder, mask="tight", model_name="cxr")
    images, masks = H.write_images(folder / "data", 3, with_masks=True)
    reference = run_savedmodel(
        version_dir, image_bytes=[p.read_bytes() for p in images], mask_bytes=[p.read_bytes() for p in masks]
    )
    return version_dir, tf.saved_model.load(str(version_dir)), images, masks, reference


def _call(loaded, signature_name, inputs):
    """What TF Serving does with a request: named tensors -> signature -> named outputs (numpy)."""
    outputs = loaded.signatures[signature_name](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}


def _rest_inputs(body):
    columns = {}
    for instance in body["instances"]:
        for name, value in instance.items():
            columns.setdefault(name, []).append(base64.b64decode(value["b64"]))
    return columns


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_rest_request_round_trip(served):
    _, loaded, images, masks, reference = served
    body = json.loads(json.dumps(client.rest_request([p.read_bytes() for p in images], [p.read_bytes() for p in masks])))
    assert body["signature_name"] == "serving_default" and set(body["instances"][0]) == {"image_bytes", "mask_bytes"}
    outputs = _call(loaded, body["signature_name"], _rest_inputs(body))
    np.testing.assert_allclose(outputs["probabilities"], reference["probabilities"], atol=1e-6)


def test_grpc_request_round_trip(served):
    _, loaded, images, masks, reference = served
    request = client.grpc_request([p.read_bytes() for p in images], [p.read_bytes() for p in masks], "cxr", 1)
    assert request.model_spec.name == "cxr" and request.model_spec.version.value == 1
    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    assert inputs["image_bytes"].shape == (3,)
    outputs = _call(loaded, request.model_spec.signature_name, inputs)
    np.testing.assert_allclose(outputs["probabilities"], reference["probabilities"], atol=1e-6)


class _RestHandler(http.server.BaseHTTPRequestHandler):
    loaded = None

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        try:
            outputs = _call(self.loaded, body.get("signature_name", "serving_default"), _rest_inputs(body))
            rows = [{k: (v[i].astype(str).tolist() if v.dtype == object else v[i].tolist()) for k, v in outputs.items()}
                    for i in range(len(outputs["probabilities"]))]
            status, payload = 200, {"predictions": rows}
        except tf.errors.InvalidArgumentError as err:
            status, payload = 400, {"error": err.message}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_rest_client_over_http(served):
    _, loaded, images, masks, reference = served
    handler = type("Handler", (_RestHandler,), {"loaded": loaded})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        rest = client.RestClient("127.0.0.1", server.server_address[1], "cxr")
        assert rest.url.endswith("/v1/models/cxr:predict")
        result = rest.predict(images, mask_paths=masks)
        assert result["labels"] == TARGETS
        np.testing.assert_allclose(result["probabilities"], reference["probabilities"], atol=1e-6)
        np.testing.assert_allclose(result["no_finding"], reference["no_finding"], atol=1e-6)
        with pytest.raises(RuntimeError, match="(?s)HTTP 400.*neither PNG nor JPEG"):
            rest.predict_bytes([b"garbage"], [masks[0].read_bytes()])
        assert rest.predict(images[:1], mask_paths=masks[:1])["probabilities"].shape == (1, 5)
    finally:
        server.shutdown()
        server.server_close()


def test_grpc_client_over_grpc(served):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    _, loaded, images, masks, reference = served

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (gRPC API)
            inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
            try:
                outputs = _call(loaded, request.model_spec.signature_name, inputs)
            except tf.errors.InvalidArgumentError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)
            response = predict_pb2.PredictResponse()
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stub = client.GrpcClient("127.0.0.1", port, "cxr")
    try:
        result = stub.predict(images, mask_paths=masks)
        assert result["labels"] == TARGETS
        np.testing.assert_allclose(result["probabilities"], reference["probabilities"], atol=1e-6)
        with pytest.raises(RuntimeError, match="(?s)INVALID_ARGUMENT.*empty batch"):
            stub.predict_bytes([], [])
        assert stub.predict(images[:2], mask_paths=masks[:2])["probabilities"].shape == (2, 5)
    finally:
        stub.close()
        server.stop(None)


def test_client_input_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        client.RestClient().predict([tmp_path / "missing.png"])
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="1 images but 2 masks"):
        client.RestClient().predict([tmp_path / "a.png"], [tmp_path / "a.png", tmp_path / "a.png"])


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None, reason="tensorflow_model_server not installed")
def test_real_tensorflow_model_server(served):
    version_dir, _, images, masks, reference = served
    rest_port, grpc_port = _free_port(), _free_port()
    process = subprocess.Popen([
        "tensorflow_model_server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
        "--rest_api_timeout_in_ms=60000", "--model_name=cxr", f"--model_base_path={version_dir.parent}",
    ])
    try:
        rest = client.RestClient("127.0.0.1", rest_port, "cxr", timeout=5)
        deadline = time.time() + 60
        while True:
            try:
                result = rest.predict(images, mask_paths=masks)
                break
            except (OSError, RuntimeError):
                if time.time() > deadline or process.poll() is not None:
                    raise
                time.sleep(1)
        np.testing.assert_allclose(result["probabilities"], reference["probabilities"], atol=1e-5)
        grpc_result = client.GrpcClient("127.0.0.1", grpc_port, "cxr").predict(images, mask_paths=masks)
        np.testing.assert_allclose(grpc_result["probabilities"], reference["probabilities"], atol=1e-5)
    finally:
        process.terminate()
        process.wait(timeout=30)
