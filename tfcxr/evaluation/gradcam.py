"""Grad-CAM (Selvaraju et al., ICCV 2017) for a Keras 3 tfcxr classifier.

The classifier takes `(batch, S, S, 1)` float32 in [0, 1] (already masked) and
returns `(batch, 5)` sigmoid probabilities. The target feature map defaults to
the last layer with a 4-D output whose spatial size is above 1, searched inside
nested models too (the last conv block of a pooled keras.applications backbone);
pass `layer_name` ("backbone/layer") to choose another.
"""

import logging
import pathlib

import numpy as np

logger = logging.getLogger(__name__)


def _node_in(model, layer):
    """The node where `model`'s own graph calls `layer` (nested models have several nodes)."""
    import keras

    # `layer.output` of a nested Functional is the tensor of its inner graph; the
    # node created when `model` called it holds the tensors of `model`'s graph.
    for node in reversed(layer._inbound_nodes):
        if not node.output_tensors:
            continue
        try:
            keras.Model(model.inputs, node.output_tensors[0])
            return node
        except ValueError:
            continue
    raise ValueError(f"Layer {layer.name!r} is not connected to the inputs of model {model.name!r}")


def _is_spatial(layer):
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return False
    return len(shape) == 4 and all(d is None or d > 1 for d in shape[1:3])


def find_target_layer(model):
    """Path of the last layer with a (batch, h, w, c) output, h and w > 1.

    Nested models (a keras.applications backbone inside the classifier) are
    searched from the last one back, so a pooled backbone yields its last conv
    block, e.g. "resnet50/conv5_block3_out".

    Returns:
        `str`: layer names joined by "/", outermost first.

    Raises:
        ValueError: when the model has no such layer.
    """
    for layer in reversed(model.layers):
        if hasattr(layer, "layers") and layer.layers:
            try:
                return f"{layer.name}/{find_target_layer(layer)}"
            except ValueError:
                pass
        if _is_spatial(layer):
            return layer.name
    raise ValueError(f"Model {model.name!r} has no layer with a 4-D spatial output for Grad-CAM")


def feature_model(model, layer_path):
    """A callable `x -> (features, probabilities)` for the layer at `layer_path`.

    Args:
        model: Keras functional model.
        layer_path: "name" of a top-level layer or "nested/.../name".

    Returns:
        callable: `(batch, S, S, 1)` -> `((batch, h, w, c), (batch, K))`, differentiable.
    """
    import keras

    head, _, rest = layer_path.partition("/")
    layer = model.get_layer(head)
    node = _node_in(model, layer)
    if not rest:
        two = keras.Model(model.inputs, [node.output_tensors[0], model.outputs[0]])
        return lambda x: two(x, training=False)
    inner = feature_model(layer, rest)
    before = keras.Model(model.inputs, node.input_tensors[0])
    after = keras.Model(node.output_tensors[0], model.outputs[0])

    def call(x):
        features, out = inner(before(x, training=False))
        return features, after(out, training=False)

    return call


def grad_cam(model, images, class_index, layer_name=None):
    """Grad-CAM heatmaps for one class per image.

    Args:
        model: Keras 3 classifier, `(batch, S, S, 1)` -> `(batch, K)`.
        images: `(batch, S, S, 1)` float32 in [0, 1], already masked like in training.
        class_index: int, or `(batch,)` ints: the output unit explained for each image.
        layer_name: feature layer path ("backbone/layer"); default `find_target_layer(model)`.

    Returns:
        `(heatmaps, probabilities)`: heatmaps float32 `(batch, S, S)` in [0, 1] (each
        divided by its maximum; all-zero when the class has no positive evidence),
        probabilities float32 `(batch, K)`.
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
    if x.shape.rank != 4 or x.shape[-1] != 1:
        raise ValueError(f"`images` must be (batch, S, S, 1). Received shape {tuple(x.shape)}")
    forward = feature_model(model, layer_name or find_target_layer(model))
    idx = np.broadcast_to(np.asarray(class_index, dtype=np.int32), (x.shape[0],))
    with tf.GradientTape() as tape:
        features, probs = forward(x)  # (batch, h, w, c), (batch, K)
        target = tf.gather(tf.cast(probs, tf.float32), idx, axis=1, batch_dims=1)  # (batch,)
    grads = tf.cast(tape.gradient(target, features), tf.float32)
    features = tf.cast(features, tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (batch, 1, 1, c)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))  # (batch, h, w, 1)
    cam = tf.image.resize(cam, tf.shape(x)[1:3], method="bilinear")[..., 0]  # (batch, S, S)
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    cam = tf.math.divide_no_nan(cam, peak)
    return cam.numpy().astype(np.float32), tf.cast(probs, tf.float32).numpy()


def prepare_inputs(image_paths, mask_paths, config, image_size):
    """Re-create a run's classifier inputs from the files of test_predictions.csv.

    Goes through the training pipeline's own `tfcxr.data.image_ops.load_and_mask`
    (decode -> mask at source resolution -> resize with pad), so Grad-CAM sees
    exactly what the classifier saw at test time (without augmentation).

    Args:
        image_paths, mask_paths: lists of file paths (mask paths may be "" for `original`).
        config: the run's resolved config (keys mask, margin, fill).
        image_size: S.

    Returns:
        `(inputs, raw, masks)`: inputs float32 (n, S, S, 1) in [0, 1]; raw float32
        (n, S, S, 1), the unmasked image; masks: list of bool (S, S) lung masks, or
        None where the row has no mask_path.
    """
    import tensorflow as tf

    from tfcxr.data.image_ops import load_and_mask, mask_and_resize
    from tfcxr.data.pipeline import PipelineConfig
    from tfcxr.mask_options import DEFAULT_MARGIN

    mode = str(config.get("mask", "original"))  # `config`: a run's flat settings (RunDir.settings)
    masked_paths = [m for m in mask_paths if m]
    if mode != "original" and len(masked_paths) < len(image_paths):
        raise ValueError(f"run uses mask={mode!r} but test_predictions.csv lacks mask_path for some of {image_paths}")
    common = {"data": "test_predictions.csv", "image_size": int(image_size),
              "margin": config.get("margin", DEFAULT_MARGIN) or DEFAULT_MARGIN,
              "fill": config.get("fill", "zero") or "zero"}
    masks_dir = str(pathlib.Path(masked_paths[0]).parent) if masked_paths else None
    run_config = PipelineConfig(mask=mode, masks=masks_dir if mode != "original" else None, **common)
    plain = PipelineConfig(mask="original", **common)
    inputs, raw, masks = [], [], []
    for image_path, mask_path in zip(image_paths, mask_paths):
        inputs.append(load_and_mask(tf.constant(str(image_path)), tf.constant(str(mask_path)), run_config).numpy())
        raw.append(load_and_mask(tf.constant(str(image_path)), tf.constant(""), plain).numpy())
        if mask_path:
            lung = tf.cast(tf.io.decode_png(tf.io.read_file(str(mask_path)), channels=1) > 127, tf.float32)
            masks.append(mask_and_resize(lung, tf.constant(""), plain).numpy()[..., 0] > 0.5)  # (S, S)
        else:
            masks.append(None)
    return np.stack(inputs).astype(np.float32), np.stack(raw).astype(np.float32), masks
