"""The ``tfcxr-segmenter`` directory format: ``save_segmenter`` writes it, ``load_saved_segmenter`` reads it.

A saved segmenter is a folder holding ``segmenter.json`` (format, version, kind, architecture config,
normalisation, prior boxes, inference settings, mask definition, and the sha256 of each file beside it),
the weights (``weights.npz`` in TF layout, float32 or float16, for LiteMedSAM; an HF ``save_pretrained``
folder ``hf_sam/`` for ViT SAM) and, when the model has one, the CXR gate (``tfcxr.segment.gate``). The JSON
is written last, so a partly written folder does not load. Version 1 folders (priors in ``lung_priors.json``
beside the JSON, no inference settings, no checksums) are still read.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from .model import SamLungModel, build_litemedsam_model, float32_policy, from_hf_sam

SAVE_FORMAT = "tfcxr-segmenter"
SAVE_FILENAME = "segmenter.json"
SAVE_VERSION = 2  # 1: priors in lung_priors.json beside it, no inference settings, no checksums
WEIGHT_DTYPES = ("float32", "float16")


def segmenter_metadata(model: SamLungModel) -> dict:
    """Everything but the weights and the gate that ``save_segmenter`` writes to ``segmenter.json``."""
    return {"format": SAVE_FORMAT, "version": SAVE_VERSION, "kind": model.kind, "name": model.name,
            "image_size": model.image_size, "normalization": model.normalization,
            "priors": np.round(model.priors, 5).tolist(), "inference": model.inference.to_dict(),
            "mask_definition": model.mask_definition}


def save_segmenter(model: SamLungModel, directory, weights_dtype: str = "float32",
                   extra: dict | None = None) -> pathlib.Path:
    """Write `model` as ``directory/segmenter.json`` plus weights (``weights.npz`` or an HF ``hf_sam/`` dir).

    The JSON carries the architecture, normalisation, priors, inference settings, mask definition and the
    sha256 of the weights file, so ``load_segmenter(directory)`` restores the model as it predicts. It is
    written last, so a partly written directory does not load.

    Args:
        model: the ``SamLungModel`` to save.
        directory: output folder (created).
        weights_dtype: "float32", or "float16" for a compact file (LiteMedSAM only; loads back as float32).
        extra: more JSON fields to store (e.g. provenance); ``read_metadata`` returns them.

    Returns:
        ``directory`` as a ``pathlib.Path``.
    """
    from tfcxr.atomic import write_text_atomic

    from . import weights

    if weights_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"`weights_dtype` must be one of {WEIGHT_DTYPES}. Received: {weights_dtype!r}")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = segmenter_metadata(model)
    if model.kind == "litemedsam":
        arrays = {k: v.astype(weights_dtype) if v.dtype.kind == "f" else v
                  for k, v in weights.export_weights(model.weight_map()).items()}
        weights.save_npz_atomic(directory / "weights.npz", arrays)
        meta.update(config=model.config.to_dict(),
                    weights={"file": "weights.npz", "dtype": weights_dtype,
                             "sha256": weights.sha256_file(directory / "weights.npz")})
    else:
        if weights_dtype != "float32":
            raise ValueError("`weights_dtype='float16'` is supported for LiteMedSAM models only")
        model.hf_model.save_pretrained(str(directory / "hf_sam"))
        meta.update(weights={"file": "hf_sam"})
    if model.gate is not None:
        from .gate import GATE_FILENAME

        model.gate.save(directory / GATE_FILENAME)
        meta["gate"] = {"file": GATE_FILENAME, "sha256": weights.sha256_file(directory / GATE_FILENAME)}
    if model.heads:
        dtype = weights_dtype if model.kind == "litemedsam" else "float32"
        meta["heads"] = {name: head.save(directory, dtype) for name, head in sorted(model.heads.items())}
    meta.update(extra or {})
    write_text_atomic(directory / SAVE_FILENAME, json.dumps(meta, indent=2))
    return directory


def read_metadata(directory) -> dict:
    """Read and check ``directory/segmenter.json`` (version 1 or 2); errors name the file."""
    from .prompts import PRIORS_FILENAME, read_priors_file

    path = pathlib.Path(directory) / SAVE_FILENAME
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable {SAVE_FORMAT} file ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != SAVE_FORMAT:
        raise ValueError(f"{path}: not a {SAVE_FORMAT} file (format={getattr(meta, 'get', dict().get)('format')!r})")
    version = meta.get("version", 1)
    if version not in (1, SAVE_VERSION):
        raise ValueError(f"{path}: unsupported version {version!r}; this tfcxr reads versions 1 and {SAVE_VERSION}")
    if meta.get("kind") not in ("litemedsam", "hf_sam"):
        raise ValueError(f"{path}: unknown kind {meta.get('kind')!r}")
    if version == 1:  # priors lay beside the JSON; weights were a bare file name
        priors_path = pathlib.Path(directory) / PRIORS_FILENAME
        meta["priors"] = read_priors_file(priors_path).tolist() if priors_path.is_file() else None
        meta["weights"] = {"file": meta["weights"]}
    if not isinstance(meta.get("weights"), dict) or not isinstance(meta["weights"].get("file"), str) or \
            pathlib.PurePath(meta["weights"]["file"]).name != meta["weights"]["file"]:
        raise ValueError(f"{path}: `weights` must name a file inside the directory. Received: {meta.get('weights')!r}")
    return meta


def _settings_from(meta: dict, path: pathlib.Path):
    from . import weights
    from .gate import CxrGate
    from .heads import check_definition
    from .prompts import InferenceSettings, check_priors

    gate = None
    if meta.get("gate"):
        entry = meta["gate"]
        if not isinstance(entry, dict) or pathlib.PurePath(str(entry.get("file"))).name != entry.get("file"):
            raise ValueError(f"{path}: `gate` must name a file inside the directory. Received: {entry!r}")
        gate_path = path.parent / entry["file"]
        weights.verify_sha256(gate_path, str(entry.get("sha256")))
        gate = CxrGate.load(gate_path)

    try:
        inference = InferenceSettings.from_dict(meta["inference"]) if meta.get("inference") else None
        priors = check_priors(meta["priors"], path) if meta.get("priors") is not None else None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: invalid priors or inference settings ({err})") from err
    heads = _heads_from(meta, path)
    check_definition(inference.definition if inference else "", heads, path)
    return {"priors": priors, "inference": inference, "mask_definition": meta.get("mask_definition"), "gate": gate,
            "heads": heads}


def _heads_from(meta: dict, path: pathlib.Path) -> dict:
    from .heads import MaskHead
    from .weights import WeightsError

    entries = meta.get("heads") or {}
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: `heads` must map head names to files. Received: {entries!r}")
    try:
        return {name: MaskHead.load(path.parent, name, entry) for name, entry in entries.items()}
    except WeightsError:
        raise  # it names the head's file already
    except ValueError as err:  # a bad entry of segmenter.json
        raise ValueError(f"{path}: {err}") from err


def load_saved_segmenter(directory: pathlib.Path, from_pt=None, name=None) -> SamLungModel:
    """The ``SamLungModel`` saved in `directory` (checked against its sha256s), named `name` or as saved.

    ``from_pt``: for an ``hf_sam`` folder, load PyTorch weights (needs torch); None picks automatically.
    Raises ``ValueError`` for an invalid ``segmenter.json`` and ``WeightsError`` for a corrupt weights file.
    """
    from . import weights
    from .sam import load_hf_sam

    meta = read_metadata(directory)
    meta_path = directory / SAVE_FILENAME
    settings = _settings_from(meta, meta_path)
    heads = settings.pop("heads")
    weights_path = directory / meta["weights"]["file"]
    if meta["kind"] == "litemedsam":
        from .litemedsam import LiteMedSAMConfig

        expected = meta["weights"].get("sha256")
        if expected is not None:
            weights.verify_sha256(weights_path, expected)
        try:
            config = LiteMedSAMConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{meta_path}: invalid `config` ({err})") from err
        model = build_litemedsam_model(config, name=name or meta.get("name", "litemedsam"),
                                       normalization=meta["normalization"], **settings)
        model.load_weights(weights_path)
    else:
        with float32_policy():
            hf = load_hf_sam(str(weights_path), from_pt=from_pt)
        model = from_hf_sam(hf, name=name or meta.get("name", str(directory)), normalization=meta["normalization"],
                            **settings)
    for head in heads.values():  # after the weights: a head's decoder starts from them
        model.add_head(head)
    model.source_dir = directory
    return model

