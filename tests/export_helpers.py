"""Shared builders for the export/serving tests: a tiny run directory honouring the run-dir contract.

The classifier contract (tfcxr/models): float32 (batch, S, S, 1) in [0, 1] -> (batch, 5) sigmoid probabilities
in TARGETS order, with its preprocessing inside the model.
"""

import pathlib

import numpy as np

TINY_SIZE = 32


def tiny_classifier(image_size=TINY_SIZE, seed=0):
    """A few-kilobyte Keras 3 model with the classifier contract (gray -> 3 channels, normalise, conv, sigmoid)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 1), name="images")
    x = keras.layers.Concatenate()([inputs, inputs, inputs])  # (batch, S, S, 3)
    x = keras.layers.Rescaling(2.0, offset=-1.0)(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)  # (batch, S/2, S/2, 8)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)  # (batch, S/4, S/4, 16)
    x = keras.layers.GlobalAveragePooling2D()(x)  # (batch, 16)
    outputs = keras.layers.Dense(5, activation="sigmoid", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="tiny_classifier")


def write_run(rundir, model=None, mask="original", image_size=TINY_SIZE, **config):
    """Write RUNDIR/config.yaml + RUNDIR/best.keras; return the path."""
    import yaml

    rundir = pathlib.Path(rundir)
    rundir.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else tiny_classifier(image_size)
    model.save(rundir / "best.keras")
    resolved = {"backbone": "tiny_test", "image_size": image_size, "mask": mask, "margin": 0.05, "fill": "zero"}
    resolved.update(config)
    (rundir / "config.yaml").write_text(yaml.safe_dump(resolved))
    return rundir


def png_bytes(array_uint8):
    """(H, W) uint8 -> PNG file bytes."""
    import cv2

    ok, encoded = cv2.imencode(".png", np.asarray(array_uint8))
    assert ok
    return encoded.tobytes()


def jpeg_bytes(array_uint8):
    """(H, W) uint8 -> JPEG file bytes."""
    import cv2

    ok, encoded = cv2.imencode(".jpg", np.asarray(array_uint8))
    assert ok
    return encoded.tobytes()


def xray_like(height, width, seed=0):
    """A smooth random (H, W) uint8 image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 120 + 60 * np.sin(xx / 7.0 + seed) * np.cos(yy / 9.0)
    return np.clip(base + rng.normal(0, 10, (height, width)), 0, 255).astype(np.uint8)


def lung_mask(height, width):
    """(H, W) uint8 0/255 mask of two ellipses."""
    yy, xx = np.mgrid[0:height, 0:width]
    left = ((xx - width * 0.3) / (width * 0.18)) ** 2 + ((yy - height * 0.5) / (height * 0.35)) ** 2 <= 1
    right = ((xx - width * 0.7) / (width * 0.18)) ** 2 + ((yy - height * 0.5) / (height * 0.35)) ** 2 <= 1
    return ((left | right) * 255).astype(np.uint8)


def write_images(folder, count, size=(40, 48), with_masks=False):
    """Write `count` PNG images (and masks) into folder/images (folder/masks); return (image paths, mask paths)."""
    folder = pathlib.Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, masks = [], []
    for i in range(count):
        path = folder / "images" / f"img{i}.png"
        path.write_bytes(png_bytes(xray_like(*size, seed=i)))
        images.append(path)
        if with_masks:
            (folder / "masks").mkdir(exist_ok=True)
            mask_path = folder / "masks" / f"img{i}.png"
            mask_path.write_bytes(png_bytes(lung_mask(*size)))
            masks.append(mask_path)
    return images, masks


def export_tiny(folder, mask="original", segmenter=None, model_name="tfcxr"):
    """Write a tiny run under folder/run and export it to folder/models; return (run dir, version dir)."""
    from tfcxr.export.savedmodel import export_savedmodel

    folder = pathlib.Path(folder)
    run = write_run(folder / "run", mask=mask)
    return run, export_savedmodel(run, folder / "models", model_name=model_name, segmenter=segmenter)


def export_tiny_onnx(folder, mask="loose"):
    """`export_tiny`, then the run as folder/onnx/cxr.onnx and 3 images (with masks) under folder/data.

    Returns:
        (run dir, SavedModel version dir, .onnx path, image paths, mask paths).
    """
    from tfcxr.export.onnx import export_onnx

    folder = pathlib.Path(folder)
    run, version_dir = export_tiny(folder, mask=mask)
    onnx_path = export_onnx(run, folder / "onnx", model_name="cxr")
    images, masks = write_images(folder / "data", 3, with_masks=True)
    return run, version_dir, onnx_path, images, masks
