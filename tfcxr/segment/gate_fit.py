"""Fit and measure the CXR gate of a segmenter (``tfcxr.segment.gate``) on real CXRs and generated non-CXR inputs.

Samples per split (train / validation / test):

- real frontal CXRs: the images of the lung pair sets (the preset's own train / validation / test pairs) and of
  extra image folders (e.g. NIH ChestX-ray14), split 60/20/20 by a hash of the patient part of the file name
  (``<patient>_<index>``, NIH's naming), so no patient is in two splits; ``folder_limit`` caps the folder images
  per split (a seeded subset) to bound the CPU cost;
- transformed CXRs: every ``transform_every``-th real image of the split, rotated, flipped, inverted or cropped
  (the kinds take turns);
- synthetic images: ``synthetic_per_kind`` of each kind per split;
- photos: the bundled scikit-image photos, each in one split only (by name), as ``photo_crops`` random crops;
  and face crops.

The gate is fitted on train, its threshold set on validation real CXRs (at most ``max_false_rejection`` flagged),
and test gives the AUROC, the false-rejection rate and the share of non-CXR inputs flagged, per kind.
Pooled features are cached per encoder in ``cache_dir``, so a rerun computes nothing twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pathlib

import numpy as np

from . import gate_data
from .gate import fit_gate, threshold_for

logger = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
REAL = "real_cxr"


@dataclasses.dataclass
class GateConfig:
    """How the gate is fitted; the preset config's ``gate`` mapping sets these fields."""

    real_folders: list = dataclasses.field(default_factory=list)  # extra CXR image folders (relative to data_root)
    folder_limit: dict = dataclasses.field(default_factory=dict)  # {split: max images} from the folders (seeded)
    max_false_rejection: float = 0.005  # on validation real CXRs
    components: int = 64
    c: float = 1.0
    transform_every: int = 2
    synthetic_per_kind: dict = dataclasses.field(default_factory=lambda: {"train": 20, "validation": 10,
                                                                          "test": 20})
    photo_crops: int = 4
    faces: int = 30  # per split
    seed: int = 0


@dataclasses.dataclass
class Sample:
    """One gate image: ``key`` names it in the feature cache, ``load()`` returns float32 (H, W, 1) in [0, 1]."""

    key: str
    kind: str  # REAL, a transform, a synthetic kind, "photo" or "face"
    source: str
    load: object


def _split_of(stem: str) -> str:
    patient = stem.split("_")[0]
    bucket = int(hashlib.sha1(patient.encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 6 else "validation" if bucket < 8 else "test"


def _real_samples(pair_specs: dict, folders, root, limit: dict, seed: int) -> dict:
    from tfcxr.data.io import read_image

    from tfcxr.data.pairs import load_pairs
    from .predict import list_images

    real = {split: [] for split in SPLITS}
    for split, specs in pair_specs.items():
        for spec in specs:
            for pair in load_pairs(spec):
                real[split].append(Sample(f"pair/{pair.name}", REAL, pathlib.Path(spec).stem,
                                          lambda image=pair.image: image))
    for folder in folders:
        path = pathlib.Path(folder) if root is None else pathlib.Path(root) / folder
        by_split = {split: [] for split in SPLITS}
        for stem, file in list_images(str(path)):
            by_split[_split_of(stem)].append(Sample(f"file/{stem}", REAL, path.name, lambda f=file: read_image(f)))
        for split, items in by_split.items():
            if limit.get(split) and len(items) > limit[split]:
                keep = np.sort(np.random.default_rng(seed).choice(len(items), limit[split], replace=False))
                items = [items[i] for i in keep]
            real[split] += items
    return real


def gate_samples(config: GateConfig, pair_specs: dict, root=None) -> dict:
    """``{split: [Sample, ...]}``: real CXRs and every family of non-CXR input (see the module docstring)."""
    rng = np.random.default_rng(config.seed)
    samples = _real_samples(pair_specs, config.real_folders, root, config.folder_limit, config.seed)
    photo_names = sorted(gate_data.photos())
    for index, split in enumerate(SPLITS):
        real = list(samples[split])
        for i, sample in enumerate(real[:: config.transform_every]):
            kind = gate_data.TRANSFORMS[i % len(gate_data.TRANSFORMS)]
            seed = int(rng.integers(2**31))
            samples[split].append(Sample(f"{sample.key}/{kind}", kind, sample.source, lambda s=sample, k=kind,
                                         r=seed: gate_data.transformed(s.load(), k, np.random.default_rng(r))))
        for kind in gate_data.SYNTHETIC:
            for j in range(config.synthetic_per_kind.get(split, 0)):
                seed = int(rng.integers(2**31))
                samples[split].append(Sample(f"{split}/{kind}/{j}", kind, "generated", lambda k=kind, r=seed:
                                             gate_data.synthetic(k, np.random.default_rng(r))))
        for name in photo_names[index :: len(SPLITS)]:
            for j in range(config.photo_crops):
                seed = int(rng.integers(2**31))
                samples[split].append(Sample(f"photo/{name}/{j}", "photo", "skimage", lambda n=name, r=seed:
                                             gate_data.random_crop(gate_data.photos()[n], np.random.default_rng(r))))
        face_seed = int(rng.integers(2**31))
        for j in range(config.faces):
            samples[split].append(Sample(f"{split}/face/{j}", "face", "skimage", lambda r=face_seed, j=j:
                                         gate_data.faces(j + 1, np.random.default_rng(r))[j]))
    return samples


def pooled_features_of(model, samples, cache_dir, batch_size: int = 8) -> np.ndarray:
    """Pooled gate features (N, F) of `samples`, cached per encoder and sample key (resumable)."""
    from .embedding_cache import model_fingerprint
    from .gate import pooled_features
    from .weights import load_npz, save_npz_atomic

    cache = pathlib.Path(cache_dir) / f"gate-{model_fingerprint(model)}"
    cache.mkdir(parents=True, exist_ok=True)
    name = {s.key: hashlib.sha1(s.key.encode()).hexdigest()[:20] + ".npz" for s in samples}
    todo = [s for s in samples if not (cache / name[s.key]).is_file()]
    logger.info("Gate features: %d cached, %d to compute (%s)", len(samples) - len(todo), len(todo), cache)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        pixel_values = np.concatenate([np.asarray(model.preprocess(s.load()[None])[0]) for s in batch])
        features = np.asarray(pooled_features(model.embed(pixel_values)))
        for sample, row in zip(batch, features):
            save_npz_atomic(cache / name[sample.key], {"features": row})
        if (start // batch_size) % 25 == 0:
            logger.info("gate features %d/%d", start + len(batch), len(todo))
    return np.stack([load_npz(cache / name[s.key])["features"] for s in samples])


def fit_and_measure(model, config: GateConfig, pair_specs: dict, cache_dir, root=None):
    """Fit the gate of `model` and measure it; returns (CxrGate, report dict)."""
    from sklearn.metrics import roc_auc_score

    samples = gate_samples(config, pair_specs, root)
    features = {split: pooled_features_of(model, samples[split], cache_dir) for split in SPLITS}
    is_real = {split: np.asarray([s.kind == REAL for s in samples[split]]) for split in SPLITS}
    gate = fit_gate(features["train"][is_real["train"]], features["train"][~is_real["train"]],
                    config.components, config.c, config.seed)
    scores = {split: gate.score_features(features[split]) for split in SPLITS}
    gate.threshold = np.float32(threshold_for(scores["validation"][is_real["validation"]],
                                              config.max_false_rejection))
    report = {"threshold": float(gate.threshold), "max_false_rejection": config.max_false_rejection,
              "counts": {split: {"real": int(is_real[split].sum()), "other": int((~is_real[split]).sum())}
                         for split in SPLITS}}
    for split in ("validation", "test"):
        flagged = scores[split] < gate.threshold
        kinds = sorted({s.kind for s in samples[split]})
        report[split] = {
            "auroc": float(roc_auc_score(is_real[split], scores[split])),
            "false_rejection": float(flagged[is_real[split]].mean()),
            "non_cxr_flagged": float(flagged[~is_real[split]].mean()),
            "flagged_by_kind": {k: {"n": int(sum(s.kind == k for s in samples[split])),
                                    "flagged": float(np.mean([f for f, s in zip(flagged, samples[split])
                                                              if s.kind == k]))} for k in kinds},
            "real_flagged_by_source": {src: float(np.mean([f for f, s in zip(flagged, samples[split])
                                                           if s.kind == REAL and s.source == src]))
                                       for src in sorted({s.source for s in samples[split] if s.kind == REAL})},
        }
    logger.info("Gate: threshold %.4f, test %s", gate.threshold,
                {k: report["test"][k] for k in ("auroc", "false_rejection", "non_cxr_flagged")})
    return gate, report
