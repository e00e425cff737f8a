"""Build a TensorRT engine from the exported ONNX and run it. Needs ``tfcxr[tensorrt]``.

pip TensorFlow has no TF-TRT, so the route is SavedModel -> ONNX (:mod:`tfcxr.export.onnx`) -> TensorRT engine
with the TensorRT 10 python API:

- ``builder.create_network(0)`` (explicit batch is the only mode in TRT 10) filled by ``trt.OnnxParser``;
- TensorRT 10.x only: 11.x removed ``BuilderFlag.FP16``/``INT8`` and calibrators (strongly typed networks and
  Q/DQ quantization instead), so the extra should pin ``tensorrt>=10,<11``;
- a builder config with ``BuilderFlag.FP16`` (and ``BuilderFlag.INT8`` with an ``IInt8EntropyCalibrator2`` fed
  from a tf.data sample of the training split; TRT 10 marks implicit INT8 calibration deprecated but still runs it);
- one optimization profile for the dynamic batch axis, (1, 16, 32) by default (:func:`profile_shapes`), also used
  as the calibration profile;
- ``build_serialized_network`` -> ``<out>/<model_name>.<precision>.engine`` plus a JSON sidecar with the run
  metadata (engines cannot carry it).

:class:`EngineRunner` executes an engine with ``execute_async_v3`` and named tensors, using the torch-free
``cuda-python`` runtime bindings for device memory.

Everything that needs neither TensorRT nor a GPU (profile shapes, calibration batch feeding) is plain Python, so
it is tested on CPU. ``tensorrt`` and ``cuda`` are imported inside the functions that need them: this module
imports cleanly without them.
"""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np

from tfcxr.atomic import write_bytes_atomic

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
EXTRA_HINT = "install the extra: `pip install 'tfcxr[tensorrt]'` (tensorrt 10.x, cuda-python>=12) on a CUDA machine"


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as err:
        raise ImportError(f"TensorRT export needs the `tensorrt` package; {EXTRA_HINT}") from err
    if int(trt.__version__.split(".")[0]) != 10:
        # 11.x removed BuilderFlag.FP16/INT8 and implicit INT8 calibration (strong typing + Q/DQ instead).
        raise ImportError(f"TensorRT 10.x is required, found {trt.__version__}; {EXTRA_HINT}")
    return trt


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as err:
            raise ImportError(f"Running a TensorRT engine needs `cuda-python`; {EXTRA_HINT}") from err
    return cudart


def _cuda_check(result):
    """Unwrap a cuda-python ``(err, *values)`` tuple, raising RuntimeError on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:  # cudaError_t.cudaSuccess == 0
        raise RuntimeError(f"CUDA runtime error {err}")
    return values[0] if len(values) == 1 else (values or None)


# ----------------------------------------------------------------------------------------------------------------
# Pure helpers (no TensorRT needed)
# ----------------------------------------------------------------------------------------------------------------
def profile_shapes(image_size: int, min_batch: int = 1, opt_batch: int = 16, max_batch: int = 32) -> dict:
    """Shapes of the optimization profile of the ``images`` input.

    Returns:
        {"min": (min_batch, S, S, 1), "opt": (opt_batch, S, S, 1), "max": (max_batch, S, S, 1)}.

    Raises:
        ValueError: unless 1 <= min_batch <= opt_batch <= max_batch and image_size >= 1.
    """
    if not 1 <= int(min_batch) <= int(opt_batch) <= int(max_batch):
        raise ValueError(
            "Batch sizes must satisfy 1 <= min_batch <= opt_batch <= max_batch. "
            f"Received: min_batch={min_batch}, opt_batch={opt_batch}, max_batch={max_batch}"
        )
    if int(image_size) < 1:
        raise ValueError(f"`image_size` must be a positive int. Received: image_size={image_size!r}")
    size = int(image_size)
    return {name: (int(batch), size, size, 1) for name, batch in
            (("min", min_batch), ("opt", opt_batch), ("max", max_batch))}


def calibration_batches(samples, batch_size: int, image_size: int, num_batches: int | None = None):
    """Re-batch a stream of calibration images into C-contiguous float32 (batch_size, S, S, 1) arrays.

    Args:
        samples: iterable of images or batches: arrays/tensors (S, S, 1) or (n, S, S, 1) in [0, 1], or dicts
            with an ``"image"`` entry (the elements of the tfcxr tf.data pipeline), or (image, label) tuples.
        batch_size: the calibration batch size (within the optimization profile).
        image_size: S; other shapes raise ValueError.
        num_batches: stop after this many batches (None: until `samples` ends). A last partial batch is dropped.

    Yields:
        np.ndarray float32 (batch_size, S, S, 1), C-contiguous.
    """
    if int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size!r}")
    pending, count, produced = [], 0, 0
    for element in samples:
        if num_batches is not None and produced >= num_batches:
            return
        if isinstance(element, dict):
            element = element["image"]
        elif isinstance(element, tuple):
            element = element[0]
        array = np.asarray(element, dtype=np.float32)
        if array.ndim == 3:
            array = array[np.newaxis]
        if array.ndim != 4 or array.shape[1:] != (image_size, image_size, 1):
            raise ValueError(
                f"Calibration images must be ({image_size}, {image_size}, 1) or (n, {image_size}, {image_size}, 1). "
                f"Received: shape={array.shape}"
            )
        pending.append(array)
        count += len(array)
        while count >= batch_size and (num_batches is None or produced < num_batches):
            stacked = np.concatenate(pending)
            yield np.ascontiguousarray(stacked[:batch_size])
            produced += 1
            rest = stacked[batch_size:]
            pending, count = ([rest] if len(rest) else []), len(rest)


def check_precision(precision: str) -> str:
    """Return `precision` if it is one of PRECISIONS, else raise ValueError echoing it."""
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}. Received: precision={precision!r}")
    return precision


def training_sample(rundir, num_images: int = 256):
    """A tf.data sample of the run's TRAINING split for INT8 calibration: (image (batch, S, S, 1), labels) batches.

    Built like training (same data, masks, mask mode, margin, fill, size, curation and split) but without
    shuffling or augmentation, limited to about `num_images` images.
    """
    import math

    from tfcxr.data.pipeline import PipelineConfig, make_dataset
    from tfcxr.rundir import RunDir
    from tfcxr.train import resolve_data  # resolves `data: demo` exactly as training did

    config = RunDir(rundir).config
    data, masks = resolve_data(config)
    pipeline = PipelineConfig(
        data=data, masks=masks, mask_spec=config.mask_spec, batch_size=16, augment=False, cache=None,
        seed=config.seed, curation=config.curation(), tfds_data_dir=config.tfds_data_dir,
    )
    return make_dataset(pipeline, "train", training=False).take(math.ceil(int(num_images) / 16))


def engine_path_for(out_dir, model_name: str, precision: str) -> pathlib.Path:
    """``<out_dir>/<model_name>.<precision>.engine``."""
    return pathlib.Path(out_dir) / f"{model_name}.{check_precision(precision)}.engine"


# ----------------------------------------------------------------------------------------------------------------
# TensorRT
# ----------------------------------------------------------------------------------------------------------------
def make_calibrator(batches, batch_size: int, image_size: int, cache_path=None):
    """An ``IInt8EntropyCalibrator2`` feeding `batches` (iterable of float32 (batch_size, S, S, 1)) to TensorRT.

    `cache_path`: calibration table to reuse (read if present, written after calibration).
    """
    trt = _import_tensorrt()
    cudart = _import_cudart()
    nbytes = int(batch_size) * int(image_size) ** 2 * 4

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 needs the explicit base constructor
            self._batches = iter(batches)
            self._device = _cuda_check(cudart.cudaMalloc(nbytes))
            self._cache = pathlib.Path(cache_path) if cache_path else None

        def get_batch_size(self):
            return int(batch_size)

        def get_batch(self, names):
            batch = next(self._batches, None)
            if batch is None:
                return None
            _cuda_check(cudart.cudaMemcpy(
                self._device, batch.ctypes.data, nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            ))
            return [int(self._device)]

        def read_calibration_cache(self):
            if self._cache is not None and self._cache.is_file():
                return self._cache.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            if self._cache is not None:
                write_bytes_atomic(self._cache, bytes(cache))  # a killed build never leaves half a cache

        def __del__(self):
            cudart.cudaFree(self._device)  # best effort at teardown

    return EntropyCalibrator()


def build_engine(
    onnx_path,
    engine_path,
    image_size: int,
    precision: str = "fp16",
    batch_sizes=(1, 16, 32),
    calibration=None,
    calibration_cache=None,
    workspace_bytes: int = 2 << 30,
) -> pathlib.Path:
    """Parse `onnx_path`, build a serialized engine and write it to `engine_path`.

    Args:
        image_size: S of the ``images`` input (batch, S, S, 1).
        precision: "fp32", "fp16" or "int8" (INT8 keeps FP16 enabled for layers without INT8 kernels).
        batch_sizes: (min, opt, max) of the dynamic batch profile.
        calibration: for "int8": iterable of float32 (opt_batch, S, S, 1) arrays (see `calibration_batches`).
        calibration_cache: optional calibration table path (reused when present).
        workspace_bytes: builder workspace memory pool limit.
    """
    trt = _import_tensorrt()
    engine_path = pathlib.Path(engine_path)
    check_precision(precision)
    shapes = profile_shapes(image_size, *batch_sizes)
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    profile = builder.create_optimization_profile()
    input_name = network.get_input(0).name
    profile.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if calibration is None and not (calibration_cache and pathlib.Path(calibration_cache).is_file()):
            raise ValueError("precision='int8' needs `calibration` batches or an existing `calibration_cache`")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = make_calibrator(
            calibration or (), shapes["opt"][0], image_size, cache_path=calibration_cache
        )
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT failed to build a {precision} engine (see the TensorRT log)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(engine_path, bytes(serialized))
    logger.info("Wrote %s (%s, batch %s..%s)", engine_path, precision, shapes["min"][0], shapes["max"][0])
    return engine_path


class EngineRunner:
    """Run a serialized TensorRT engine on numpy batches.

    Args:
        engine_path: a ``.engine`` file from `build_engine`.

    Call with float32 images (batch, S, S, 1) in [0, 1]; batches larger than the profile's maximum are split.
    Returns {"probabilities": (batch, 5), "no_finding": (batch,)} as numpy float32.
    """

    def __init__(self, engine_path):
        trt = _import_tensorrt()
        self._trt = trt
        self._cudart = _import_cudart()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(pathlib.Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{engine_path}: could not deserialize the TensorRT engine (built for another GPU/TRT?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = [n for n in names if n != self.input_name]
        self.max_batch = self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0]
        self.stream = _cuda_check(self._cudart.cudaStreamCreate())
        self._buffers = {}  # name -> (device pointer, nbytes)

    def _device_buffer(self, name, nbytes):
        pointer, size = self._buffers.get(name, (None, 0))
        if size < nbytes:
            if pointer is not None:
                _cuda_check(self._cudart.cudaFree(pointer))
            pointer = _cuda_check(self._cudart.cudaMalloc(nbytes))
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def _run(self, images):
        cudart = self._cudart
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        images = np.ascontiguousarray(images, np.float32)
        self.context.set_input_shape(self.input_name, images.shape)
        pointer = self._device_buffer(self.input_name, images.nbytes)
        _cuda_check(cudart.cudaMemcpyAsync(pointer, images.ctypes.data, images.nbytes, to_device, self.stream))
        self.context.set_tensor_address(self.input_name, int(pointer))
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))
            outputs[name] = np.empty(shape, dtype)
            self.context.set_tensor_address(name, int(self._device_buffer(name, outputs[name].nbytes)))
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for name, array in outputs.items():
            pointer = self._buffers[name][0]
            _cuda_check(cudart.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes, to_host, self.stream))
        _cuda_check(cudart.cudaStreamSynchronize(self.stream))
        return {name: array.astype(np.float32) for name, array in outputs.items()}

    def __call__(self, images):
        images = np.asarray(images, np.float32)
        parts = [self._run(images[i:i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
        return {name: np.concatenate([part[name] for part in parts]) for name in self.output_names}

    def close(self):
        """Free device memory and the stream."""
        for pointer, _ in self._buffers.values():
            _cuda_check(self._cudart.cudaFree(pointer))
        self._buffers = {}
        _cuda_check(self._cudart.cudaStreamDestroy(self.stream))


def compare(probabilities, reference) -> dict:
    """Parity of engine probabilities (batch, 5) against reference probabilities (batch, 5).

    Returns:
        {"max_abs_diff": max |diff|, "top_label_agreement": fraction of rows with the same argmax}.
        FP16 acceptance: max_abs_diff < 1e-2 and top_label_agreement == 1.
    """
    probabilities = np.asarray(probabilities, np.float32)
    reference = np.asarray(reference, np.float32)
    if probabilities.shape != reference.shape:
        raise ValueError(f"Shapes differ: {probabilities.shape} vs reference {reference.shape}")
    return {
        "max_abs_diff": float(np.max(np.abs(probabilities - reference))),
        "top_label_agreement": float(np.mean(probabilities.argmax(-1) == reference.argmax(-1))),
    }


def export_tensorrt(
    rundir,
    out_dir,
    model_name: str = "tfcxr",
    precision: str = "fp16",
    batch_sizes=(1, 16, 32),
    calibration_images=None,
    calibration_batches_count: int = 16,
) -> pathlib.Path:
    """ONNX export of `rundir` then a TensorRT engine ``<out_dir>/<model_name>.<precision>.engine`` (+ ``.json``).

    Args:
        calibration_images: for "int8": iterable of calibration images (see `calibration_batches`), e.g. a
            tf.data sample of the training split.
    """
    from tfcxr.export.onnx import export_onnx, read_metadata

    _import_tensorrt()  # fail before the (slow) ONNX conversion
    engine_path = engine_path_for(out_dir, model_name, precision)
    onnx_path = export_onnx(rundir, out_dir, model_name=model_name)
    metadata = read_metadata(onnx_path)
    size = int(metadata["image_size"])
    calibration = None
    if precision == "int8":
        if calibration_images is None:
            raise ValueError("precision='int8' needs calibration images (a sample of the training split)")
        opt_batch = profile_shapes(size, *batch_sizes)["opt"][0]
        calibration = calibration_batches(calibration_images, opt_batch, size, calibration_batches_count)
    build_engine(
        onnx_path, engine_path, size, precision=precision, batch_sizes=batch_sizes, calibration=calibration,
        calibration_cache=engine_path.with_suffix(".calib") if precision == "int8" else None,
    )
    sidecar = dict(metadata, precision=precision, batch_sizes=list(batch_sizes), onnx=onnx_path.name)
    engine_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return engine_path
