"""Serving clients: TF Serving REST/gRPC requests and the onnxruntime predictor."""
