"""Fake run directories and toy scores for the evaluation tests (no dependency on tfcxr.train).

`toy_scores` gives 0/1 labels with correlated scores for the metric, bootstrap and
DeLong tests. A fake run holds config.yaml, test_predictions.csv (labels correlated
with the probabilities), history.csv, efficiency.json and a tiny Keras 3 best.keras
with input (batch, S, S, 1) float32 and output (batch, 5) sigmoid, plus real PNG
images and lung masks for Grad-CAM and the mask grid.
"""

import json
import pathlib

import cv2
import numpy as np
import pandas as pd
import yaml

from tfcxr.labels import NO_FINDING, TARGETS

SIZE = 32


def toy_scores(n=60, seed=0, ties=False):
    """(labels (n,) 0/1, scores (n,) float) with scores correlated to the labels; `ties` rounds to 0.1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = y * 0.8 + rng.normal(0, 0.7, n)
    if ties:
        s = np.round(s, 1)
    return y, s


def write_images(root, num_images=24, size=40, seed=0):
    """Gray PNG images and 0/255 two-lung masks; returns (image_paths, mask_paths)."""
    rng = np.random.default_rng(seed)
    images, masks = pathlib.Path(root, "images"), pathlib.Path(root, "masks")
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    image_paths, mask_paths = [], []
    for i in range(num_images):
        mask = np.zeros((size, size), np.uint8)
        cv2.ellipse(mask, (size // 3, size // 2), (size // 8, size // 3), 0, 0, 360, 255, -1)
        cv2.ellipse(mask, (2 * size // 3, size // 2), (size // 8, size // 3), 0, 0, 360, 255, -1)
        image = (rng.uniform(60, 200, (size, size)) * (0.6 + 0.4 * (mask > 0))).astype(np.uint8)
        name = f"{i:08d}_000.png"
        cv2.imwrite(str(images / name), image)
        cv2.imwrite(str(masks / name), mask)
        image_paths.append(str(images / name))
        mask_paths.append(str(masks / name))
    return image_paths, mask_paths


def tiny_model(nested=False):
    """(batch, SIZE, SIZE, 1) -> (batch, 5) sigmoid; `nested` puts the convs in a sub-model."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    if nested:
        inner_in = keras.Input((SIZE, SIZE, 1))
        h = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inner_in)
        h = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="last_conv")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        x = keras.Model(inner_in, h, name="backbone")(inputs)
    else:
        x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
        x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="last_conv")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(TARGETS), activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def make_run(run_dir, image_paths, mask_paths, mask="original", backbone="tiny", seed=0, noise=0.6,
             model=True, nested=False, labels=None, patients=None):
    """Write a complete fake run directory and return its path.

    Args:
        labels: optional int (n, 5) target labels; default random with every class present.
        patients: optional patient id per image; default two images per patient.
    """
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    n = len(image_paths)
    rng = np.random.default_rng(100)  # labels shared by every run of a test
    y = labels if labels is not None else (rng.uniform(size=(n, len(TARGETS))) < 0.3).astype(int)
    if labels is None:
        y[: len(TARGETS)] = np.eye(len(TARGETS), dtype=int)  # every class has a positive
        y[len(TARGETS): 2 * len(TARGETS)] = 0
    noise_rng = np.random.default_rng(seed)
    logits = 2.0 * (y - 0.5) + noise_rng.normal(0, noise * 3, y.shape)
    p = 1.0 / (1.0 + np.exp(-logits))
    frame = pd.DataFrame({
        "image_id": [pathlib.Path(path).name for path in image_paths],
        "patient_id": patients if patients is not None else [str(i // 2) for i in range(n)],
        "image_path": image_paths,
        "mask_path": mask_paths if mask != "original" else "",  # like a run trained without masks
    })
    for k, t in enumerate(TARGETS):
        frame[f"y_{t}"] = y[:, k]
    frame[f"y_{NO_FINDING}"] = (y.sum(axis=1) == 0).astype(int)
    for k, t in enumerate(TARGETS):
        frame[f"p_{t}"] = p[:, k]
    frame.sample(frac=1.0, random_state=seed).to_csv(run_dir / "test_predictions.csv", index=False)
    config = {"backbone": backbone, "mask": mask, "margin": 0.05, "fill": "zero", "image_size": SIZE,
              "seed": seed, "data": "fake", "masks": str(pathlib.Path(mask_paths[0]).parent)}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    pd.DataFrame({"epoch": [0, 1, 2], "loss": [0.7, 0.6, 0.55],
                  "val_macro_auroc": [0.6, 0.7, 0.65]}).to_csv(run_dir / "history.csv", index=False)
    (run_dir / "efficiency.json").write_text(json.dumps({
        "seconds_per_epoch": 1.5, "train_images_per_second": 42.0, "epochs_run": 3, "best_epoch": 2,
        "device": "CPU", "precision": "float32"}), encoding="utf-8")
    if model:
        tiny_model(nested).save(run_dir / "best.keras")
    return run_dir
