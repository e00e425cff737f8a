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

A fourth, optional split, ``holdout``, holds real CXRs that nothing else uses (``holdout_folders`` minus every image
of the pair sets), their transforms and freshly seeded synthetic images: a test set scored once, after every choice.

The gate is fitted on train for each number of principal components in ``components``; validation chooses one (the
most validation non-CXR inputs flagged at a threshold that flags at most ``max_false_rejection`` of the validation
real CXRs; ties go to fewer components). Test and holdout give the AUROC, the false-rejection rate and the share of
non-CXR inputs flagged, per kind. Pooled features are cached per encoder in ``cache_dir``, so a rerun computes
nothing twice.
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
HOLDOUT = "holdout"
REAL = "real_cxr"


@dataclasses.dataclass
class GateConfig:
    """How the gate is fitted; the preset config's ``gate`` mapping sets these fields."""

    real_folders: list = dataclasses.field(default_factory=list)  # extra CXR image folders (relative to data_root)
    folder_limit: dict = dataclasses.field(default_factory=dict)  # {split: max images} from the folders (seeded)
    max_false_rejection: float = 0.005  # on validation real CXRs
    components: object = 64  # an int, or a list to choose from (on validation, or by cross-validation)
    # 0: fit on train, choose and set the threshold on validation. N > 1: N-fold cross-fitting over train and
    # validation together (folds grouped by source image): out-of-fold scores choose the components and set the
    # threshold, and the gate is refitted on both splits
    folds: int = 0
    components_dtype: str = "float32"  # "float16" halves gate.npz (tfcxr.segment.gate.fit_gate)
    holdout_folders: list = dataclasses.field(default_factory=list)  # real CXR folders for the holdout split
    c: float = 1.0
    transform_every: int = 2
    # more transforms of chosen kinds, per split: {split: {kind: every}} makes kind of every `every`-th real image
    # (from the second on), with their own random stream, so the other samples keep their seeds and cache entries
    extra_transforms: dict = dataclasses.field(default_factory=dict)
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


def _folder_samples(folder, root, prefix: str) -> list:
    """(stem, real-CXR ``Sample`` keyed ``<prefix>/<stem>``) per image file of `folder` (under `root` when given)."""
    from tfcxr.data.io import read_image

    from .predict import list_images

    path = pathlib.Path(folder) if root is None else pathlib.Path(root) / folder
    return [(stem, Sample(f"{prefix}/{stem}", REAL, path.name, lambda f=file: read_image(f)))
            for stem, file in list_images(str(path))]


def _real_samples(pair_specs: dict, folders, root, limit: dict, seed: int) -> dict:
    from tfcxr.data.pairs import load_pairs

    real = {split: [] for split in SPLITS}
    for split, specs in pair_specs.items():
        for spec in specs:
            for pair in load_pairs(spec):
                real[split].append(Sample(f"pair/{pair.name}", REAL, pathlib.Path(spec).stem,
                                          lambda image=pair.image: image))
    for folder in folders:
        by_split = {split: [] for split in SPLITS}
        for stem, sample in _folder_samples(folder, root, "file"):
            by_split[_split_of(stem)].append(sample)
        for split, items in by_split.items():
            if limit.get(split) and len(items) > limit[split]:
                keep = np.sort(np.random.default_rng(seed).choice(len(items), limit[split], replace=False))
                items = [items[i] for i in keep]
            real[split] += items
    return real


def _transforms_and_synthetic(split: str, real: list, config: GateConfig, rng) -> list:
    """Transforms of every ``transform_every``-th real sample, then the synthetic images of `split`."""
    out = []
    for i, sample in enumerate(real[:: config.transform_every]):
        kind = gate_data.TRANSFORMS[i % len(gate_data.TRANSFORMS)]
        seed = int(rng.integers(2**31))
        out.append(Sample(f"{sample.key}/{kind}", kind, sample.source, lambda s=sample, k=kind, r=seed:
                          gate_data.transformed(s.load(), k, np.random.default_rng(r))))
    extra = np.random.default_rng([config.seed, int(hashlib.sha1(split.encode()).hexdigest()[:8], 16)])
    for kind, every in sorted(config.extra_transforms.get(split, {}).items()):
        if kind not in gate_data.TRANSFORMS:
            raise ValueError(f"extra_transforms: unknown transform {kind!r}; choose from {gate_data.TRANSFORMS}")
        for sample in real[1 :: int(every)]:
            seed = int(extra.integers(2**31))
            out.append(Sample(f"{sample.key}/{kind}/extra", kind, sample.source, lambda s=sample, k=kind, r=seed:
                              gate_data.transformed(s.load(), k, np.random.default_rng(r))))
    for kind in gate_data.SYNTHETIC:
        for j in range(config.synthetic_per_kind.get(split, 0)):
            seed = int(rng.integers(2**31))
            out.append(Sample(f"{split}/{kind}/{j}", kind, "generated", lambda k=kind, r=seed:
                              gate_data.synthetic(k, np.random.default_rng(r))))
    return out


def _holdout_samples(config: GateConfig, pair_specs: dict, root) -> list:
    """Real CXRs of ``holdout_folders`` that are in no pair set, their transforms and fresh synthetic images."""
    from tfcxr.data.pairs import load_pairs

    used = {pair.name for specs in pair_specs.values() for spec in specs for pair in load_pairs(spec)}
    real = [sample for folder in config.holdout_folders for stem, sample in _folder_samples(folder, root, HOLDOUT)
            if stem not in used]
    rng = np.random.default_rng([config.seed, len(SPLITS)])  # its own stream: the other splits keep their seeds
    return real + _transforms_and_synthetic(HOLDOUT, real, config, rng)


def gate_samples(config: GateConfig, pair_specs: dict, root=None) -> dict:
    """``{split: [Sample, ...]}``: real CXRs and every family of non-CXR input (see the module docstring)."""
    rng = np.random.default_rng(config.seed)
    samples = _real_samples(pair_specs, config.real_folders, root, config.folder_limit, config.seed)
    photo_names = sorted(gate_data.photos())
    for index, split in enumerate(SPLITS):
        samples[split] += _transforms_and_synthetic(split, list(samples[split]), config, rng)
        for name in photo_names[index :: len(SPLITS)]:
            for j in range(config.photo_crops):
                seed = int(rng.integers(2**31))
                samples[split].append(Sample(f"photo/{name}/{j}", "photo", "skimage", lambda n=name, r=seed:
                                             gate_data.random_crop(gate_data.photos()[n], np.random.default_rng(r))))
        face_seed = int(rng.integers(2**31))
        for j in range(config.faces):
            samples[split].append(Sample(f"{split}/face/{j}", "face", "skimage", lambda r=face_seed, j=j:
                                         gate_data.faces(j + 1, np.random.default_rng(r))[j]))
    if config.holdout_folders:
        samples[HOLDOUT] = _holdout_samples(config, pair_specs, root)
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


def _flagged_share(scores, is_real, max_false_rejection) -> tuple[float, float]:
    """(threshold, share of non-CXR flagged) when the threshold flags at most `max_false_rejection` of the reals."""
    threshold = threshold_for(scores[is_real], max_false_rejection)
    return threshold, float((scores[~is_real] < threshold).mean())


def _component_choices(config: GateConfig) -> list[int]:
    """The component counts to try, ascending (so ties go to fewer components)."""
    choices = config.components if isinstance(config.components, (list, tuple)) else [config.components]
    return sorted(int(c) for c in choices)


def _choose_components(features: dict, is_real: dict, config: GateConfig):
    """Fit one gate per component count on train and keep the best on validation; returns (gate, sweep rows)."""
    best, sweep = None, []
    for k in _component_choices(config):
        gate = fit_gate(features["train"][is_real["train"]], features["train"][~is_real["train"]], k, config.c,
                        config.seed, config.components_dtype)
        threshold, flagged = _flagged_share(gate.score_features(features["validation"]), is_real["validation"],
                                            config.max_false_rejection)
        sweep.append({"components": k, "validation_non_cxr_flagged": flagged})
        if best is None or flagged > best[1]:
            gate.threshold = np.float32(threshold)
            best = (gate, flagged)
    return best[0], sweep


def _group(key: str) -> str:
    """Fold group of a sample: a real image with its transforms, a photo with its crops, anything else alone."""
    parts = key.split("/")
    return "/".join(parts[:2]) if parts[0] in ("pair", "file", "holdout", "photo") else key


def _cross_fit(samples: dict, features: dict, is_real: dict, config: GateConfig):
    """Grouped N-fold cross-fitting over train + validation; returns (gate, sweep rows, out-of-fold report)."""
    from sklearn.model_selection import GroupKFold

    pool = samples["train"] + samples["validation"]
    x = np.concatenate([features["train"], features["validation"]])
    real = np.concatenate([is_real["train"], is_real["validation"]])
    folds = list(GroupKFold(config.folds).split(x, groups=[_group(s.key) for s in pool]))
    best, sweep = None, []
    for k in _component_choices(config):
        scores = np.zeros(len(x), np.float32)
        for fit_rows, score_rows in folds:
            fold_gate = fit_gate(x[fit_rows][real[fit_rows]], x[fit_rows][~real[fit_rows]], k, config.c, config.seed,
                                 config.components_dtype)
            scores[score_rows] = fold_gate.score_features(x[score_rows])
        threshold, flagged = _flagged_share(scores, real, config.max_false_rejection)
        sweep.append({"components": k, "out_of_fold_non_cxr_flagged": flagged})
        if best is None or flagged > best[1]:
            best = (k, flagged, threshold, scores)
    k, _, threshold, scores = best
    gate = fit_gate(x[real], x[~real], k, config.c, config.seed, config.components_dtype)
    gate.threshold = np.float32(threshold)
    out_of_fold = _summary(pool, scores, threshold, real)
    return gate, sweep, dict(out_of_fold, folds=config.folds, note="out-of-fold scores of train + validation")


def _measure(gate, samples: list, features, is_real) -> dict:
    """AUROC, false rejections and non-CXR flags of one split, overall, per kind and per real source."""
    return _summary(samples, gate.score_features(features), gate.threshold, is_real)


def _summary(samples: list, scores, threshold, is_real) -> dict:
    """The flag rates of `scores` (N,) at `threshold`: overall, per kind and per real-CXR source, and the AUROC."""
    from sklearn.metrics import roc_auc_score

    flagged = scores < threshold
    kinds = np.asarray([s.kind for s in samples])
    sources = np.asarray([s.source for s in samples])
    return {
        "auroc": float(roc_auc_score(is_real, scores)),
        "false_rejection": float(flagged[is_real].mean()),
        "non_cxr_flagged": float(flagged[~is_real].mean()),
        "flagged_by_kind": {k: {"n": int((kinds == k).sum()), "flagged": float(flagged[kinds == k].mean())}
                            for k in sorted(set(kinds))},
        "real_flagged_by_source": {src: float(flagged[is_real & (sources == src)].mean())
                                   for src in sorted(set(sources[is_real]))},
    }


def fit_and_measure(model, config: GateConfig, pair_specs: dict, cache_dir, root=None):
    """Fit the gate of `model` and measure it; returns (CxrGate, report dict)."""
    samples = gate_samples(config, pair_specs, root)
    features = {split: pooled_features_of(model, items, cache_dir) for split, items in samples.items()}
    is_real = {split: np.asarray([s.kind == REAL for s in items]) for split, items in samples.items()}
    if config.folds:
        gate, sweep, out_of_fold = _cross_fit(samples, features, is_real, config)
    else:
        (gate, sweep), out_of_fold = _choose_components(features, is_real, config), None
    report = {"threshold": float(gate.threshold), "max_false_rejection": config.max_false_rejection,
              "components": int(gate.components.shape[1]), "components_sweep": sweep,
              "counts": {split: {"real": int(is_real[split].sum()), "other": int((~is_real[split]).sum())}
                         for split in samples}}
    if out_of_fold is not None:
        report["cross_validation"] = out_of_fold
    for split in samples:
        if split == "test" or split == HOLDOUT or (split == "validation" and out_of_fold is None):
            report[split] = _measure(gate, samples[split], features[split], is_real[split])
    logger.info("Gate: %d components, threshold %.4f, test %s", report["components"], gate.threshold,
                {k: report["test"][k] for k in ("auroc", "false_rejection", "non_cxr_flagged")})
    return gate, report
