"""The frozen image encoder's embeddings, computed once and cached on disk, content-addressed.

Shared by fine-tuning with a frozen encoder (``tfcxr.segment.finetune``), segmentation evaluation
(``tfcxr.segment.evaluate``) and the caches keyed by encoder weights (ONNX encoder, CXR gate), which use
`model_fingerprint`.
"""

import hashlib
import logging
import pathlib

import numpy as np

from tfcxr.atomic import atomic_write

logger = logging.getLogger(__name__)


def model_fingerprint(model) -> str:
    """SHA-1 of the image encoder's weights: identifies which embeddings a cache holds."""
    digest = hashlib.sha1()
    for weight in model.image_encoder.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:16]


def cached_embeddings(model, pixel_values: np.ndarray, cache_dir=None, batch_size: int = 8) -> np.ndarray:
    """Image embeddings of `pixel_values`, each computed once and cached as ``.npy`` under `cache_dir`.

    Files are content-addressed: ``cache_dir/<encoder weights SHA-1>/<pixel_values SHA-1>.npy``, so fine-tuning
    (resume included) and evaluation with the same frozen encoder share them, and a changed encoder never reads
    stale embeddings.

    Args:
        model: a ``SamLungModel``.
        pixel_values: float32 (n, S, S, 3) from ``model.preprocess``.
        cache_dir: cache folder; None computes without caching.
        batch_size: images per ``model.embed`` call.

    Returns:
        float32 (n, C, e, e) ``model.embed`` outputs.
    """
    from tqdm import tqdm

    folder = pathlib.Path(cache_dir) / model_fingerprint(model) if cache_dir else None
    paths = [folder / f"{hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest()[:20]}.npy" if folder else None
             for v in pixel_values]
    out = [np.load(p) if p is not None and p.is_file() else None for p in paths]
    todo = [i for i, e in enumerate(out) if e is None]
    if folder is not None:
        logger.info("Embeddings: %d cached, %d to compute (%s)", len(out) - len(todo), len(todo), folder)
        folder.mkdir(parents=True, exist_ok=True)
    for start in tqdm(range(0, len(todo), batch_size), desc="embeddings", unit="batch", disable=not todo):
        idx = todo[start : start + batch_size]
        batch = np.asarray(model.embed(pixel_values[idx]))
        for i, embedding in zip(idx, batch):
            out[i] = embedding
            if folder is not None:
                with atomic_write(paths[i]) as handle:
                    np.save(handle, embedding)
    return np.stack(out).astype(np.float32)
