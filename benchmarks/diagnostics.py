"""One-off diagnostics behind figures in docs/results.md that no other benchmark prints.

    python benchmarks/diagnostics.py dilation              # loose-mask dilation vs a max-pool square, one batch;
                                                           # loose vs tight masking inside tf.data, by dilation
                                                           # and from a distance map
    python benchmarks/diagnostics.py encoder-stages        # time share of each TinyViT stage of the preset
    python benchmarks/diagnostics.py encoder-roofline      # the encoder's GFLOP/s vs this CPU's own GEMM rate, and the
                                                           # time its matmuls and convolutions take on their own
    python benchmarks/diagnostics.py openvino              # OpenVINO (optional: pip install openvino) vs TF masks
    python benchmarks/diagnostics.py onnx-int8             # int8 dynamic quantisation in ONNX Runtime vs TF masks
    python benchmarks/diagnostics.py bn-drift RUN_DIR      # inference- vs training-mode BN activations of a run
    python benchmarks/diagnostics.py distance-decode       # decode of a stored lung distance map: PNG vs zlib

Each prints its figures and, with --json, writes them. Timings are medians of repeated calls in one process, so
ratios compare like with like.
"""

import argparse
import json
import logging
import os
import pathlib
import time

import numpy as np

logger = logging.getLogger("benchmarks.diagnostics")


def _median_seconds(fn, *args, repeats=5):
    fn(*args)  # warm-up / tracing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def dilation(batch=32, size=224, radius=11) -> dict:
    """ms per batch of `tfcxr.dilation.dilate` (octagon on bit-packed masks) vs the same octagon on one byte per
    pixel, two separable max-pools (a square), and loose vs tight masking."""
    import tensorflow as tf

    from tfcxr.dilation import _dilate_segment, dilate
    from tfcxr.masking import mask_image

    def octagon_bytes(m):  # the same four segments, one uint8 per pixel instead of one bit
        axis = int(round(radius / (1 + 2**0.5)))
        diagonal = int(round((radius - axis) / 2))
        one, zero = tf.constant(1), tf.constant(0)
        reach = axis + 2 * diagonal
        x = tf.pad(tf.cast(m > 0.5, tf.uint8), [[0, 0], [reach, reach], [reach, reach], [0, 0]])
        for length, dy, dx in ((axis, zero, one), (axis, one, zero), (diagonal, one, one), (diagonal, one, -one)):
            x = _dilate_segment(x, tf.constant(length), dy, dx)
        return tf.cast(x[:, reach:-reach, reach:-reach] if reach else x, tf.float32)

    mask = tf.cast(tf.random.uniform((batch, size, size, 1), seed=0) > 0.5, tf.float32)
    image = tf.random.uniform((batch, size, size, 1), seed=1)
    side = 2 * int(round(radius / (1 + 2**0.5))) + 1
    square = tf.function(lambda m: tf.nn.max_pool2d(tf.nn.max_pool2d(m, [1, side], 1, "SAME"), [side, 1], 1, "SAME"))
    same = bool(np.array_equal(octagon_bytes(mask).numpy(), dilate(mask, tf.constant(radius)).numpy()))
    rows = {
        "dilate_octagon": _median_seconds(tf.function(lambda m: dilate(m, tf.constant(radius))), mask, repeats=20),
        "dilate_octagon_bytes": _median_seconds(tf.function(octagon_bytes), mask, repeats=20),
        "max_pool_square": _median_seconds(square, mask, repeats=20),
        "loose_masking": _median_seconds(tf.function(lambda i, m: mask_image(
            i, m, "loose", tf.constant(radius), "zero", fill_lung_holes=False)), image, mask, repeats=20),
        "tight_masking": _median_seconds(tf.function(lambda i, m: mask_image(
            i, m, "tight", tf.constant(radius), "zero", fill_lung_holes=False)), image, mask, repeats=20),
    }
    return {"batch": batch, "size": size, "radius": radius, "bytes_equal_bits": same,
            "ms_per_batch": {k: round(1e3 * v, 2) for k, v in rows.items()},
            "in_tf_data_ms_per_batch": _masking_in_tf_data(image, mask, radius)}


def _masking_in_tf_data(image, mask, radius, batches=60):
    """ms per batch of masking inside `Dataset.map`: tight, and loose with the radius a graph constant (loops
    unrolled) or known only at run time (`tf.while_loop`), from the mask by dilation; and, as the prepared
    pipeline runs it, tight and loose from the mask's distance map (`mask_by_distance`, no dilation)."""
    import tensorflow as tf

    from tfcxr.data.lung_distance import lung_distance
    from tfcxr.masking import mask_by_distance, mask_image

    distance = tf.constant(np.stack([lung_distance(m[..., 0] > 0.5) for m in mask.numpy()])[..., None])

    def loose_at_run_time(x, m):
        known_at_run_time = radius + 0 * tf.shape(x)[0]  # the same radius, but not a graph constant
        return mask_image(x, m, "loose", known_at_run_time, "zero", fill_lung_holes=False)

    fns = {"tight": lambda x, m: mask_image(x, m, "tight", tf.constant(radius), "zero", fill_lung_holes=False),
           "loose_unrolled": lambda x, m: mask_image(x, m, "loose", tf.constant(radius), "zero", fill_lung_holes=False),
           "loose_while_loop": loose_at_run_time,
           "tight_distance_map": lambda x, d: mask_by_distance(x, d, "tight", tf.constant(radius), "zero"),
           "loose_distance_map": lambda x, d: mask_by_distance(x, d, "loose", tf.constant(radius), "zero")}
    out = {}
    for name, fn in fns.items():
        second = distance if name.endswith("distance_map") else mask
        dataset = tf.data.Dataset.from_tensors((image, second)).repeat(batches).map(
            fn, num_parallel_calls=tf.data.AUTOTUNE)
        for _ in dataset.take(3):  # warm-up: tracing
            pass
        start = time.perf_counter()
        for _ in dataset:
            pass
        out[name] = round(1e3 * (time.perf_counter() - start) / batches, 2)
    return out


def encoder_stages(model="litemedsam-lungs", batch=8) -> dict:
    """Seconds per batch of each stage of the LiteMedSAM TinyViT encoder, and their share of the whole encoder."""
    import tensorflow as tf

    from tfcxr.segment import load_segmenter

    encoder = load_segmenter(model).image_encoder
    x = tf.random.uniform((batch, 256, 256, 3), seed=0)
    parts = {"patch_embed": _median_seconds(tf.function(encoder.patch_embed), x, repeats=3)}
    h = encoder.patch_embed(x)
    for i, (blocks, down) in enumerate(encoder.stages):
        def run(v, blocks=blocks):
            for block in blocks:
                v = block(v)
            return v
        parts[f"stage{i}"] = _median_seconds(tf.function(run), h, repeats=3)
        h = run(h)
        if down is not None:
            parts[f"down{i}"] = _median_seconds(tf.function(down), h, repeats=3)
            h = down(h)
    total = _median_seconds(tf.function(encoder), x, repeats=3)
    return {"model": model, "batch": batch, "encoder_seconds": round(total, 3),
            "seconds": {k: round(v, 3) for k, v in parts.items()},
            "share_of_encoder": {k: round(v / total, 3) for k, v in parts.items()}}


# The dense ops of the encoder graph, with the names of their two tensor inputs in tf.raw_ops.
_DENSE_OPS = {"MatMul": ("a", "b"), "BatchMatMulV2": ("x", "y"), "Conv2D": ("input", "filter"),
              "DepthwiseConv2dNative": ("input", "filter")}


def encoder_roofline(model="litemedsam-lungs", batch=8) -> dict:
    """How far the fp32 TF encoder is from this CPU's limits, measured in one process.

    - `encoder_gflops_per_image`: the TF profiler's float-op count of the frozen encoder graph at batch 1.
    - `gemm_gflop_per_second`: a 2048^3 float32 matmul, the best case of this CPU's TF/oneDNN kernels.
    - `dense_ops_seconds`: every MatMul, BatchMatMul, Conv2D and depthwise conv of the encoder at batch `batch`,
      each timed alone at its own shapes and summed. With every other op (GELU, LayerNorm, softmax, reshapes)
      free and perfectly fused, the encoder would still take this long with these kernels.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from tfcxr.segment import load_segmenter

    encoder = load_segmenter(model).image_encoder
    size = encoder.config.image_size

    def frozen_graph(n):
        function = tf.function(encoder).get_concrete_function(tf.TensorSpec([n, size, size, 3], tf.float32))
        return convert_variables_to_constants_v2(function).graph

    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    gflops = tf.compat.v1.profiler.profile(frozen_graph(1), options=options).total_float_ops / 1e9

    dense_seconds, counts = 0.0, {}
    for op in frozen_graph(batch).get_operations():
        if op.type not in _DENSE_OPS:
            continue
        inputs = [tf.random.uniform(t.shape, dtype=t.dtype, seed=0) for t in op.inputs]
        attrs = {k: op.get_attr(k) for k in ("transpose_a", "transpose_b", "adj_x", "adj_y", "strides", "padding",
                                             "explicit_paddings", "dilations") if k in op.node_def.attr}
        raw, names = getattr(tf.raw_ops, op.type), _DENSE_OPS[op.type]
        alone = tf.function(lambda u, v, raw=raw, names=names, attrs=attrs: raw(**dict(zip(names, (u, v))), **attrs))
        dense_seconds += _median_seconds(alone, *inputs, repeats=3)
        counts[op.type] = counts.get(op.type, 0) + 1

    a = tf.random.uniform((2048, 2048), seed=0)
    gemm = 2 * 2048**3 / _median_seconds(tf.function(tf.matmul), a, a, repeats=10) / 1e9
    encoder_seconds = _median_seconds(tf.function(encoder), tf.random.uniform((batch, size, size, 3), seed=0),
                                      repeats=3)
    rate = gflops * batch / encoder_seconds
    return {"model": model, "batch": batch, "input": [size, size, 3], "cpu_count": os.cpu_count(),
            "encoder_gflops_per_image": round(gflops, 2),
            "encoder_seconds": round(encoder_seconds, 3),
            "encoder_gflop_per_second": round(rate, 1),
            "gemm_gflop_per_second": round(gemm, 1),
            "encoder_over_gemm": round(rate / gemm, 3),
            "dense_ops": counts,
            "dense_ops_seconds": round(dense_seconds, 3),
            "dense_ops_share_of_encoder": round(dense_seconds / encoder_seconds, 3),
            "max_speedup_with_these_kernels": round(encoder_seconds / dense_seconds, 2)}


def _compare_embed_backends(model, images, count, batch, backends) -> list:
    """Time the whole mask step with each alternative encoder against TF, alternating per batch, and mask Dice.

    Args:
        backends: {name: embed function, pixel values float32 (B, S, S, 3) -> embeddings float32 (B, 256, 64, 64)}.

    Returns:
        one row per backend: its speed over TF's, and its masks' Dice against TF's.
    """
    from tfcxr.data.io import read_image
    from tfcxr.segment import load_segmenter
    from tfcxr.segment.metrics import dice as mask_dice
    from tfcxr.segment.predict import list_images, segment_batch

    reference = load_segmenter(model)
    pictures = [read_image(p) for _, p in list_images(images)[:count]]
    rows = []
    for name, embed in backends.items():
        fast = load_segmenter(model)
        object.__setattr__(fast, "_embed_fn", embed)
        seconds, masks = {"tf": 0.0, name: 0.0}, {"tf": [], name: []}
        for segmenter in (reference, fast):  # warm-up
            segment_batch(segmenter, pictures[:batch], None, batch)
        for start in range(0, len(pictures), batch):  # alternate per batch: a noisy host hits both alike
            for key, segmenter in (("tf", reference), (name, fast)):
                begin = time.perf_counter()
                masks[key] += [m for m, _, _ in segment_batch(segmenter, pictures[start : start + batch], None, batch)]
                seconds[key] += time.perf_counter() - begin
        dice = [mask_dice(a, b) for a, b in zip(masks[name], masks["tf"])]
        rows.append({"backend": name, "over_tf": round(seconds["tf"] / seconds[name], 3),
                     "tf_images_per_second": round(len(pictures) / seconds["tf"], 3),
                     "dice_min": round(float(min(dice)), 4), "dice_mean": round(float(np.mean(dice)), 5),
                     "masks_identical": int(sum(np.array_equal(a, b) for a, b in zip(masks["tf"], masks[name])))})
    return rows


def _encoder_onnx(segmenter):
    """Path of a loaded segmenter's image-encoder ONNX export (exported on first use, then cached)."""
    from tfcxr.segment import onnx_encoder

    path = onnx_encoder.onnx_path(segmenter)
    if not path.is_file():
        onnx_encoder.export_encoder(segmenter, path)
    return path


def openvino(model="litemedsam-lungs", images="data/nih_cxr14_384/images", count=16, batch=8) -> dict:
    """Images/s of the whole mask step with the encoder on OpenVINO (f32 and bf16) vs TF, and mask Dice vs TF."""
    import openvino as ov  # optional: not a tfcxr dependency

    from tfcxr.segment import load_segmenter

    path = _encoder_onnx(load_segmenter(model))
    backends = {}
    for hint in ("f32", "bf16"):
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                              "PERFORMANCE_HINT": "THROUGHPUT"})
        request = compiled.create_infer_request()
        backends[f"openvino_{hint}"] = lambda v, r=request, c=compiled: r.infer(
            {0: np.asarray(v, np.float32)})[c.output(0)].copy()
    return {"model": model, "images": images, "n": count, "batch": batch,
            "rows": _compare_embed_backends(model, images, count, batch, backends)}


def onnx_int8(model="litemedsam-lungs", images="data/nih_cxr14_384/images", count=16, batch=8) -> dict:
    """Images/s of the whole mask step with the encoder dynamically quantised to int8 in ONNX Runtime (weights
    per channel; activations quantised per call), for the matmuls alone and for matmuls and convolutions, vs TF."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from tfcxr.segment import load_segmenter
    from tfcxr.segment.onnx_encoder import OnnxImageEncoder

    segmenter = load_segmenter(model)
    path = _encoder_onnx(segmenter)
    backends = {"onnx_float32": OnnxImageEncoder(segmenter, path=path)}
    for label, ops in (("int8_matmul", ["MatMul"]), ("int8_matmul_conv", ["MatMul", "Conv"])):
        quantised = path.with_name(f"{path.stem}-{label}.onnx")
        if not quantised.is_file():
            quantize_dynamic(str(path), str(quantised), op_types_to_quantize=ops, per_channel=True,
                             weight_type=QuantType.QInt8)
        backends[f"onnx_{label}"] = OnnxImageEncoder(segmenter, path=quantised)
    return {"model": model, "images": images, "n": count, "batch": batch, "onnxruntime": ort.__version__,
            "rows": _compare_embed_backends(model, images, count, batch, backends)}


def bn_drift(run_dir, images="data/nih_cxr14_384/images", count=64) -> dict:
    """Activation std after BatchNorm layers of a trained run's backbone, inference vs training mode."""
    import cv2
    import keras

    from tfcxr.models import backbone_layer  # also registers the custom layers for load_model
    from tfcxr.data.io import read_image
    from tfcxr.segment.predict import list_images

    model = keras.models.load_model(pathlib.Path(run_dir) / "best.keras")
    size = model.input_shape[1]
    x = np.stack([cv2.resize(read_image(p)[..., 0], (size, size))[..., None]
                  for _, p in list_images(images)[:count]]).astype("float32")
    backbone = backbone_layer(model)
    batchnorms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    probe = keras.Model(backbone.inputs, [layer.output for layer in batchnorms])
    pixels = model.get_layer("preprocessor")(x)
    inference, training = probe(pixels, training=False), probe(pixels, training=True)
    return {"run": str(run_dir), "n": len(x), "layers": [
        {"layer": layer.name, "inference_std": float(np.std(a)), "training_std": float(np.std(b))}
        for layer, a, b in zip(batchnorms, inference, training)]}


def distance_decode(masks="data/lungs_shenzhen_montgomery/masks", size=512, count=20) -> dict:
    """Bytes and decode ms of real lung masks' distance maps stored as TFDS stores them: PNG (nih_cxr14 1.1.0's
    `Image` feature: `tf.io.encode_png`, decoded with `tf.image.decode_image`) vs zlib (1.2.0's `Tensor` feature,
    ZLIB encoding: `zlib.compress`, decoded with `tf.io.decode_compressed` + `tf.io.decode_raw`)."""
    import zlib

    import cv2
    import tensorflow as tf

    from tfcxr.data.lung_distance import lung_distance

    files = sorted(pathlib.Path(masks).glob("*.png"))[:count]
    if not files:
        raise FileNotFoundError(f"{masks}: no PNG masks")

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def from_png(data):
        return tf.image.decode_image(data, channels=1, dtype=tf.uint8)

    @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([3], tf.int32)])
    def from_zlib(data, shape):
        return tf.reshape(tf.io.decode_raw(tf.io.decode_compressed(data, "ZLIB"), tf.uint8), shape)

    rows = []
    for path in files:
        lung = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127
        scale = size / max(lung.shape)
        lung = cv2.resize(lung.astype(np.uint8), (round(lung.shape[1] * scale), round(lung.shape[0] * scale)),
                          interpolation=cv2.INTER_NEAREST) > 0
        distance = lung_distance(lung)[..., None]  # (H, W, 1) uint8
        png = tf.io.encode_png(distance)
        packed = tf.constant(zlib.compress(distance.tobytes()))
        shape = tf.constant(distance.shape, tf.int32)
        assert (from_png(png).numpy() == distance).all() and (from_zlib(packed, shape).numpy() == distance).all()
        rows.append({"file": path.name, "png_bytes": len(png.numpy()), "zlib_bytes": len(packed.numpy()),
                     "png_ms": 1e3 * _median_seconds(from_png, png, repeats=50),
                     "zlib_ms": 1e3 * _median_seconds(from_zlib, packed, shape, repeats=50)})
    summary = {key: float(np.median([row[key] for row in rows]))
               for key in ("png_bytes", "zlib_bytes", "png_ms", "zlib_ms")}
    summary["png_over_zlib_ms"] = float(np.median([row["png_ms"] / row["zlib_ms"] for row in rows]))
    return {"masks": str(masks), "n": len(rows), "size": size, "median": summary, "per_mask": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["dilation", "encoder-stages", "encoder-roofline", "openvino", "onnx-int8",
                                                     "bn-drift", "distance-decode"])
    parser.add_argument("run_dir", nargs="?", help="bn-drift: a tfcxr.train run directory")
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.command == "bn-drift" and not args.run_dir:
        parser.error("bn-drift needs RUN_DIR")
    result = {"dilation": dilation, "encoder-stages": encoder_stages, "encoder-roofline": encoder_roofline,
              "openvino": openvino, "onnx-int8": onnx_int8,
              "distance-decode": distance_decode}.get(
        args.command, lambda: bn_drift(args.run_dir))()
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
