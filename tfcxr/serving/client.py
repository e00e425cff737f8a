"""Clients for a tfcxr model served by TF Serving: REST (JSON, port 8501) and gRPC (port 8500).

Both send the ``serving_default`` signature of :mod:`tfcxr.export.serving_module`: ``image_bytes`` (PNG/JPEG files)
and, for masked runs exported without the embedded segmenter, ``mask_bytes`` (PNG lung masks). Both return
``{"probabilities": float32 (batch, 5), "no_finding": float32 (batch,), "labels": tuple of the 5 names}``.

    from tfcxr.serving.client import RestClient, GrpcClient
    RestClient("localhost", 8501, "tfcxr").predict(["a.png", "b.jpg"])
    GrpcClient("localhost", 8500, "tfcxr").predict(["a.png"], mask_paths=["a_mask.png"])

REST uses TF Serving's row format, ``{"signature_name": ..., "instances": [{"image_bytes": {"b64": ...}}, ...]}``:
binary inputs travel base64-encoded under a ``"b64"`` key. gRPC sends a ``PredictRequest`` with string
``TensorProto`` inputs (needs ``tensorflow-serving-api``, the ``tfcxr[serving]`` extra).

CLI: ``python -m tfcxr.serving.client --protocol rest|grpc --host H --port P --model-name M FILE [FILE ...]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import pathlib
import urllib.error
import urllib.request

import numpy as np

from tfcxr import cli

logger = logging.getLogger(__name__)

SIGNATURE = "serving_default"
PROTOCOLS = ("rest", "grpc")


def _read_all(paths, what):
    if paths is None:
        return None
    data = []
    for path in paths:
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {what} file not found")
        data.append(path.read_bytes())
    if not data:
        raise ValueError(f"No {what} files given: a request needs at least one image")
    return data


def _read_request_files(paths, mask_paths=None):
    images = _read_all(paths, "image")
    masks = _read_all(mask_paths, "mask")
    if masks is not None and len(masks) != len(images):
        raise ValueError(f"Got {len(images)} images but {len(masks)} masks: give one mask per image")
    return images, masks


# ----------------------------------------------------------------------------------------------------------------
# REST
# ----------------------------------------------------------------------------------------------------------------
def rest_request(image_bytes, mask_bytes=None, signature_name: str = SIGNATURE) -> dict:
    """The JSON body of a TF Serving REST predict call (row format, base64 ``{"b64": ...}`` for bytes).

    Args:
        image_bytes: list of encoded image files (bytes).
        mask_bytes: optional list of encoded PNG masks, one per image.
    """
    instances = []
    for i, data in enumerate(image_bytes):
        instance = {"image_bytes": {"b64": base64.b64encode(data).decode("ascii")}}
        if mask_bytes is not None:
            instance["mask_bytes"] = {"b64": base64.b64encode(mask_bytes[i]).decode("ascii")}
        instances.append(instance)
    return {"signature_name": signature_name, "instances": instances}


def parse_rest_response(body: dict) -> dict:
    """TF Serving's row-format response ``{"predictions": [{name: value}, ...]}`` -> the result dict."""
    if "error" in body:
        raise RuntimeError(f"TF Serving error: {body['error']}")
    rows = body["predictions"]
    return {
        "probabilities": np.asarray([row["probabilities"] for row in rows], np.float32),  # (batch, 5)
        "no_finding": np.asarray([row["no_finding"] for row in rows], np.float32),  # (batch,)
        "labels": tuple(rows[0]["labels"]) if rows else (),
    }


class RestClient:
    """TF Serving REST client (``POST /v1/models/<name>[/versions/<v>]:predict``), stdlib only.

    Args:
        host, port: the server (TF Serving's REST port is 8501).
        model_name: the served model name.
        version: optional model version (default: the latest served).
        timeout: seconds per request.
    """

    def __init__(self, host: str = "localhost", port: int = 8501, model_name: str = "tfcxr",
                 version: int | None = None, timeout: float = 30.0):
        self.host, self.port, self.model_name, self.version, self.timeout = host, int(port), model_name, version, timeout

    @property
    def url(self) -> str:
        version = f"/versions/{int(self.version)}" if self.version is not None else ""
        return f"http://{self.host}:{self.port}/v1/models/{self.model_name}{version}:predict"

    def predict_bytes(self, image_bytes, mask_bytes=None) -> dict:
        """Encoded images (and masks) -> {"probabilities", "no_finding", "labels"}."""
        body = json.dumps(rest_request(image_bytes, mask_bytes)).encode("utf-8")
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return parse_rest_response(json.loads(response.read()))
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")
            raise RuntimeError(f"{self.url}: HTTP {err.code}: {detail}") from None

    def predict(self, paths, mask_paths=None) -> dict:
        """Image files (and mask files) -> {"probabilities" (batch, 5), "no_finding" (batch,), "labels"}."""
        return self.predict_bytes(*_read_request_files(paths, mask_paths))


# ----------------------------------------------------------------------------------------------------------------
# gRPC
# ----------------------------------------------------------------------------------------------------------------
def _serving_apis():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as err:
        raise ImportError(
            "The gRPC client needs tensorflow-serving-api: `pip install 'tfcxr[serving]'`"
        ) from err
    return predict_pb2, prediction_service_pb2_grpc


def grpc_request(image_bytes, mask_bytes=None, model_name: str = "tfcxr", version: int | None = None,
                 signature_name: str = SIGNATURE):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` with string (batch,) tensors."""
    import tensorflow as tf

    predict_pb2, _ = _serving_apis()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(list(image_bytes), dtype=tf.string))
    if mask_bytes is not None:
        request.inputs["mask_bytes"].CopyFrom(tf.make_tensor_proto(list(mask_bytes), dtype=tf.string))
    return request


def parse_grpc_response(response) -> dict:
    """A ``PredictResponse`` -> {"probabilities", "no_finding", "labels"}."""
    import tensorflow as tf

    labels = tf.make_ndarray(response.outputs["labels"])
    return {
        "probabilities": tf.make_ndarray(response.outputs["probabilities"]).astype(np.float32),
        "no_finding": tf.make_ndarray(response.outputs["no_finding"]).astype(np.float32),
        "labels": tuple(label.decode("utf-8") for label in labels.reshape(-1, labels.shape[-1])[0]),
    }


class GrpcClient:
    """TF Serving gRPC client (``PredictionService.Predict``).

    Args:
        host, port: the server (TF Serving's gRPC port is 8500).
        model_name, version: the served model (version None: latest).
        timeout: seconds per request.
        max_message_mb: gRPC message size limit (X-ray files are large; TF Serving accepts up to 2 GB).
    """

    def __init__(self, host: str = "localhost", port: int = 8500, model_name: str = "tfcxr",
                 version: int | None = None, timeout: float = 30.0, max_message_mb: int = 256):
        import grpc

        _, service = _serving_apis()
        limit = int(max_message_mb) << 20
        options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
        self.target = f"{host}:{int(port)}"
        self.channel = grpc.insecure_channel(self.target, options=options)
        self.stub = service.PredictionServiceStub(self.channel)
        self.model_name, self.version, self.timeout = model_name, version, timeout

    def predict_bytes(self, image_bytes, mask_bytes=None) -> dict:
        """Encoded images (and masks) -> {"probabilities", "no_finding", "labels"}."""
        import grpc

        request = grpc_request(image_bytes, mask_bytes, self.model_name, self.version)
        try:
            response = self.stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise RuntimeError(f"{self.target}: gRPC {err.code().name}: {err.details()}") from None
        return parse_grpc_response(response)

    def predict(self, paths, mask_paths=None) -> dict:
        """Image files (and mask files) -> {"probabilities" (batch, 5), "no_finding" (batch,), "labels"}."""
        return self.predict_bytes(*_read_request_files(paths, mask_paths))

    def close(self):
        self.channel.close()


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of `python -m tfcxr.serving.client`."""
    parser = argparse.ArgumentParser(prog="python -m tfcxr.serving.client", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", help="PNG/JPEG chest X-ray files")
    parser.add_argument("--masks", nargs="+", default=None, help="PNG lung masks, one per image (masked runs)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="rest", help="rest (8501) or grpc (8500)")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=None, help="default 8501 for rest, 8500 for grpc")
    parser.add_argument("--model-name", default="tfcxr")
    parser.add_argument("--version", type=int, default=None)
    return cli.add_log_level(parser)


def main(argv=None) -> int:
    """Run `python -m tfcxr.serving.client` with `argv` (default: sys.argv); returns the exit status."""
    args = build_parser().parse_args(argv)
    return cli.run(_main, args, logger)


def _main(args) -> int:
    if args.protocol == "rest":
        client = RestClient(args.host, args.port or 8501, args.model_name, args.version)
    else:
        client = GrpcClient(args.host, args.port or 8500, args.model_name, args.version)
    result = client.predict(args.images, args.masks)
    labels = result["labels"]
    print("image\t" + "\t".join(labels) + "\tNo Finding")
    for path, probs, no_finding in zip(args.images, result["probabilities"], result["no_finding"]):
        print(f"{path}\t" + "\t".join(f"{p:.4f}" for p in probs) + f"\t{no_finding:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
