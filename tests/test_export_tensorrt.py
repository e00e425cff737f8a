"""TensorRT export: pure helpers on CPU; engine build and FP16 parity only where TensorRT and a GPU exist."""

import importlib.util
import shutil

import numpy as np
import pytest

from tfcxr.export import tensorrt as trt_export

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_GPU = shutil.which("nvidia-smi") is not None


def test_module_imports_without_tensorrt_and_names_the_extra():
    if HAS_TENSORRT:
        pytest.skip("tensorrt is installed")
    with pytest.raises(ImportError, match=r"tfcxr\[tensorrt\]"):
        trt_export.build_engine("model.onnx", "model.engine", image_size=32)
    with pytest.raises(ImportError, match=r"tfcxr\[tensorrt\]"):
        trt_export.EngineRunner("model.engine")


def test_profile_shapes():
    assert trt_export.profile_shapes(224) == {
        "min": (1, 224, 224, 1), "opt": (16, 224, 224, 1), "max": (32, 224, 224, 1)}
    assert trt_export.profile_shapes(64, 1, 8, 8)["opt"] == (8, 64, 64, 1)
    with pytest.raises(ValueError, match="min_batch=4, opt_batch=2"):
        trt_export.profile_shapes(224, 4, 2, 32)
    with pytest.raises(ValueError, match="image_size=0"):
        trt_export.profile_shapes(0)


def test_calibration_batches_rebatch_any_stream():
    rng = np.random.default_rng(0)
    singles = [rng.random((8, 8, 1), np.float32) for _ in range(5)]
    batches = list(trt_export.calibration_batches(singles, batch_size=2, image_size=8))
    assert len(batches) == 2  # the fifth image (a partial batch) is dropped
    assert all(b.shape == (2, 8, 8, 1) and b.dtype == np.float32 and b.flags["C_CONTIGUOUS"] for b in batches)
    np.testing.assert_array_equal(batches[1][1], singles[3])
    # Batched (image, label) tuples of uneven size, and dicts as in tf.data pipelines.
    stream = [(rng.random((3, 8, 8, 1)), None), {"image": rng.random((4, 8, 8, 1))}, rng.random((1, 8, 8, 1))]
    batches = list(trt_export.calibration_batches(stream, batch_size=4, image_size=8))
    assert [b.shape[0] for b in batches] == [4, 4]
    assert len(list(trt_export.calibration_batches(stream, 2, 8, num_batches=3))) == 3
    with pytest.raises(ValueError, match=r"Received: shape=\(1, 9, 9, 1\)"):
        list(trt_export.calibration_batches([np.zeros((9, 9, 1))], 1, 8))
    with pytest.raises(ValueError, match="batch_size=0"):
        list(trt_export.calibration_batches(singles, 0, 8))


def test_calibration_batches_from_tf_data():
    import tensorflow as tf

    images = np.random.default_rng(1).random((10, 8, 8, 1)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros((10, 5), np.float32))).batch(3)
    batches = list(trt_export.calibration_batches(dataset, batch_size=4, image_size=8))
    assert len(batches) == 2
    np.testing.assert_array_equal(np.concatenate(batches), images[:8])


def test_cuda_result_unwrapping():
    import enum

    class Error(enum.Enum):  # cuda-python returns (cudaError_t, *values)
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    assert trt_export._cuda_check((Error.cudaSuccess, 1234)) == 1234
    assert trt_export._cuda_check((Error.cudaSuccess,)) is None
    with pytest.raises(RuntimeError, match="cudaErrorMemoryAllocation"):
        trt_export._cuda_check((Error.cudaErrorMemoryAllocation, 0))


def test_compare_and_paths():
    reference = np.array([[0.1, 0.9, 0.2, 0.3, 0.4], [0.8, 0.1, 0.2, 0.3, 0.4]], np.float32)
    result = trt_export.compare(reference + 0.004, reference)
    assert result["max_abs_diff"] == pytest.approx(0.004, abs=1e-6) and result["top_label_agreement"] == 1.0
    swapped = reference[:, [1, 0, 2, 3, 4]]
    assert trt_export.compare(swapped, reference)["top_label_agreement"] == 0.0
    assert trt_export.engine_path_for("out", "cxr", "fp16").name == "cxr.fp16.engine"
    with pytest.raises(ValueError, match="precision='fp8'"):
        trt_export.engine_path_for("out", "cxr", "fp8")


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TENSORRT and HAS_GPU), reason="needs tensorrt and an NVIDIA GPU")
def test_fp16_engine_parity_with_savedmodel(tmp_path):
    import export_helpers as H
    from tfcxr.export.savedmodel import run_savedmodel

    run, version_dir = H.export_tiny(tmp_path)
    engine = trt_export.export_tensorrt(run, tmp_path / "trt", "cxr", precision="fp16", batch_sizes=(1, 8, 16))
    images = np.random.default_rng(0).random((20, H.TINY_SIZE, H.TINY_SIZE, 1), np.float32)  # > max batch
    runner = trt_export.EngineRunner(engine)
    try:
        outputs = runner(images)
    finally:
        runner.close()
    result = trt_export.compare(outputs["probabilities"], run_savedmodel(version_dir, images=images)["probabilities"])
    assert result["max_abs_diff"] < 1e-2 and result["top_label_agreement"] == 1.0, result


def test_training_sample_feeds_calibration(tmp_path):
    from tfcxr.config import TrainConfig, save_config
    from tfcxr.data.synthetic import SyntheticConfig, generate

    data = generate(tmp_path / "synthetic", SyntheticConfig(num_images=60, image_size=48, seed=0))
    run = tmp_path / "run"
    save_config(TrainConfig(data=str(data), masks=str(data / "masks"), mask="loose", image_size=32), run / "config.yaml")
    sample = trt_export.training_sample(run, num_images=20)
    batches = list(trt_export.calibration_batches(sample, batch_size=8, image_size=32, num_batches=2))
    assert len(batches) == 2 and batches[0].shape == (8, 32, 32, 1)
    assert 0.0 <= batches[0].min() and batches[0].max() <= 1.0
