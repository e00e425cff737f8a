"""Build a segmenter preset: fine-tune, choose the checkpoint and the inference settings on validation pairs,
evaluate on held-out test pairs beside zero-shot LiteMedSAM, and write the preset folder with its model card.

Usage::

    python -m tfcxr.segment.build_preset --config configs/preset_litemedsam_lungs.yaml --out runs/preset [--install]

Steps, each resumable (a rerun skips finished fine-tuning epochs and reuses cached embeddings):

1. pairs: ``split_lung_sets(data_root)`` writes ``OUT/work/split/*.csv`` (or the config names its own ``train``,
   ``validation`` and ``tests`` pair sets);
2. stages: ``tfcxr.segment.finetune`` once per stage in ``OUT/work/<stage>/``; a stage whose ``model`` is
   ``previous`` starts from the stage before;
3. checkpoint: every kept epoch checkpoint of every stage is scored on the validation pairs (mean Dice, the default
   inference settings); the best one is the preset;
4. settings: the ``settings_grid`` (prompt, refine rounds, margin, threshold) is scored on the validation pairs;
   the best setting is stored with the preset (ties keep the earlier grid point);
5. package: ``OUT/<name>/`` gets the weights in ``weights_dtype`` with their sha256; the float16 copy must score
   within ``float16_tolerance`` of float32 on the validation pairs;
6. evaluation: each test set with gt, prior and refine prompts for the preset and the ``baseline``: mean and
   minimum Dice and HD95 with seeded bootstrap 95% CIs, and how many images below ``flag_dice`` carry a QC flag;
7. gate (when the config has ``gate``): the CXR gate is fitted on the packaged model's embeddings
   (``tfcxr.segment.gate_fit``), its threshold set on validation CXRs, and measured on test inputs;
8. ``OUT/<name>/evaluation.json`` and ``MODEL_CARD.md``;
9. heads (when the config lists ``heads``): each mask-definition head is chosen by cross-validation on its
   training pairs, fitted, added with its variant and scored on the tests (``tfcxr.segment.fit_head``); the test
   sets a head's ``cross_fit`` names are scored out of fold, then join that head's fit.
``--install`` copies the folder into the package's presets (``tfcxr/segment/presets/<name>/``).

The test pairs are used in steps 6 and 9 only, to score what was chosen without them; the preset's weights,
settings and gate never train on them. Only a head's ``cross_fit`` sets train that head, after their out-of-fold
scoring (step 9).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import pathlib
import shutil
import time

import numpy as np

from tfcxr import cli
from tfcxr.atomic import write_text_atomic

from .preset_evaluation import evaluate_preset, images_per_second

logger = logging.getLogger(__name__)

@dataclasses.dataclass
class PresetConfig:
    """How a preset is built. The YAML (``--config``) sets these fields; ``--out`` and ``--data-root`` override."""

    name: str = "litemedsam-lungs"
    data_root: str = ""  # folder of the lung pair sets (tfcxr.data.lung_split); or give train/validation/tests
    split: dict = dataclasses.field(default_factory=lambda: {"seed": 0, "v7_train_max": 60, "v7_test_max": 24,
                                                             "v7_val_max": 60})
    train: str = ""  # pairs folder / CSV manifest when `data_root` is empty
    validation: list = dataclasses.field(default_factory=list)  # more validation pair sets
    tests: dict = dataclasses.field(default_factory=dict)  # {test set name: pairs}
    stages: list = dataclasses.field(default_factory=list)  # FinetuneConfig fields per stage, plus `name`
    settings_grid: dict = dataclasses.field(default_factory=lambda: {
        "prompt": ["refine"], "refine_rounds": [1], "margin": [0.02], "threshold": [0.0]})
    mask_definition: dict = dataclasses.field(default_factory=lambda: {"name": "custom", "description": ""})
    weights_dtype: str = "float16"
    float16_tolerance: float = 0.001
    baseline: str = "litemedsam"
    bootstrap_resamples: int = 1000
    seed: int = 0
    flag_dice: float = 0.85
    batch_size: int = 8
    gate: dict | None = None  # tfcxr.segment.gate_fit.GateConfig fields; None = no gate
    heads: list = dataclasses.field(default_factory=list)  # tfcxr.segment.fit_head.HeadConfig (or its fields) each

    def __post_init__(self):
        if not self.stages:
            raise ValueError("`stages` must list at least one fine-tuning stage")
        if not self.data_root and not (self.train and self.tests):
            raise ValueError("set `data_root` (the lung pair sets) or both `train` and `tests`")
        unknown = set(self.settings_grid) - {"prompt", "refine_rounds", "margin", "threshold"}
        if unknown:
            raise ValueError(f"`settings_grid` has unknown keys {sorted(unknown)}")
        from .fit_head import HeadConfig

        self.heads = [head if isinstance(head, HeadConfig) else HeadConfig(**head) for head in self.heads]


# ----------------------------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------------------------
def pair_sets(config: PresetConfig, work: pathlib.Path) -> dict:
    """``{"train": spec, "validation": [specs], "tests": {name: spec}}``, splitting ``data_root`` when set."""
    if not config.data_root:
        return {"train": config.train, "validation": list(config.validation), "tests": dict(config.tests)}
    from tfcxr.data.lung_split import split_lung_sets

    split = work / "split"
    listing = split_lung_sets(config.data_root, split, **config.split)
    write_text_atomic(split / "split.json", json.dumps(listing, indent=1))
    validation = [str(split / "val_v7.csv")] if (split / "val_v7.csv").is_file() else []
    return {"train": str(split / "train.csv"), "validation": validation + list(config.validation),
            "tests": {"classic": str(split / "test_classic.csv"), "v7": str(split / "test_v7.csv")},
            "counts": listing["counts"]}


def run_stages(config: PresetConfig, train: str, work: pathlib.Path) -> list[pathlib.Path]:
    """Fine-tune every stage (resuming finished epochs); returns their run folders."""
    from .finetune import FinetuneConfig, finetune

    runs, previous = [], None
    for stage in config.stages:
        fields = dict(stage)
        name = fields.pop("name")
        if fields.get("model") == "previous":
            if previous is None:
                raise ValueError(f"stage {name!r}: `model: previous` needs a stage before it")
            fields["model"] = str(previous)
        fields.update(data=train, out=str(work / name), cache_dir=str(work / "cache"))
        start = time.time()
        summary = finetune(FinetuneConfig(**fields))
        logger.info("stage %s: %s (%.0f s)", name, summary, time.time() - start)
        previous = work / name
        runs.append(previous)
    return runs


def stage_seconds(run: pathlib.Path) -> float:
    """Training seconds of a fine-tuning run, summed over the epochs of its ``history.csv``."""
    import csv

    with open(run / "history.csv", newline="", encoding="utf-8") as handle:
        return round(sum(float(row["seconds"]) for row in csv.DictReader(handle)), 1)


def validation_pairs(sets: dict, first_run: pathlib.Path) -> list:
    """The first stage's own validation pairs plus the configured validation sets."""
    from tfcxr.data.pairs import load_pairs

    names = set(json.loads((first_run / "split.json").read_text())["validation"])
    pairs = [p for p in load_pairs(sets["train"]) if p.name in names]
    for spec in sets["validation"]:
        pairs += load_pairs(spec)
    return pairs


def _mean_dice(model, pairs, settings, cache, batch_size, prompt=None) -> tuple[float, list]:
    from .evaluate import evaluate

    prompt = prompt or settings.prompt
    rows = evaluate(model, pairs, (prompt,), settings, batch_size, cache)[prompt]["per_image"]
    dice = [row["dice"] for row in rows]
    return float(np.mean(dice)), dice


def choose_checkpoint(runs, pairs, cache, batch_size) -> tuple[object, dict]:
    """Score every kept checkpoint of every run on `pairs`; returns (best model, {checkpoint: mean Dice})."""
    from . import average
    from .loading import load_segmenter

    scores, best = {}, (-1.0, None)
    for run in runs:
        for epoch in average.kept_epochs(run):
            model = load_segmenter(str(run))
            average.average_checkpoints(model, [average.checkpoint_path(run, epoch)])  # one = a restore
            key = f"{run.name}/epoch-{epoch}"
            scores[key], _ = _mean_dice(model, pairs, model.inference, cache, batch_size)
            logger.info("validation %s: mean Dice %.4f", key, scores[key])
            if scores[key] > best[0]:
                best = (scores[key], model)
    return best[1], scores


def choose_settings(model, grid: dict, pairs, cache, batch_size) -> tuple[object, dict]:
    """Score every point of the settings grid on `pairs`; returns (best settings, {setting: mean Dice})."""
    keys = sorted(grid)
    scores, best = {}, (-1.0, None)
    for values in itertools.product(*(grid[k] for k in keys)):
        settings = model.inference.replace(**dict(zip(keys, values)))
        if settings.prompt == "prior" and settings.refine_rounds != min(grid.get("refine_rounds", [1])):
            continue  # rounds do not change "prior"
        key = " ".join(f"{k}={v}" for k, v in zip(keys, values))
        scores[key], _ = _mean_dice(model, pairs, settings, cache, batch_size)
        if scores[key] > best[0] + 1e-9:
            best = (scores[key], settings)
    return best[1], scores


def select_model(runs, val_pairs, config: PresetConfig, cache) -> tuple[object, dict, dict]:
    """Steps 3-4: the best checkpoint with the best inference settings and the preset's mask definition.

    Returns:
        (model, {checkpoint: validation mean Dice}, {setting: validation mean Dice}).
    """
    model, checkpoint_scores = choose_checkpoint(runs, val_pairs, cache, config.batch_size)
    model.inference, setting_scores = choose_settings(model, config.settings_grid, val_pairs, cache,
                                                      config.batch_size)
    model.mask_definition = dict(config.mask_definition)
    return model, checkpoint_scores, setting_scores


def package(model, config: PresetConfig, preset_dir: pathlib.Path, val_pairs, cache, provenance: dict):
    """Step 5: save `model` to `preset_dir` in ``weights_dtype``, reload it, and check that the stored weights move
    validation mean Dice by at most ``float16_tolerance``.

    Returns:
        (the reloaded model, the dtype check: float32 and stored mean Dice, their difference, the largest per-image
        difference).
    """
    from .loading import load_segmenter
    from .segmenter_format import save_segmenter

    float32_dice, per_image32 = _mean_dice(model, val_pairs, model.inference, cache, config.batch_size)
    save_segmenter(model, preset_dir, weights_dtype=config.weights_dtype, extra=provenance)
    packaged = load_segmenter(str(preset_dir))
    packaged_dice, per_image_packaged = _mean_dice(packaged, val_pairs, packaged.inference, cache, config.batch_size)
    dtype_check = {"float32_mean_dice": float32_dice, f"{config.weights_dtype}_mean_dice": packaged_dice,
                   "mean_abs_difference": abs(packaged_dice - float32_dice),
                   "max_image_difference": float(np.max(np.abs(np.subtract(per_image_packaged, per_image32))))}
    if dtype_check["mean_abs_difference"] > config.float16_tolerance:
        raise ValueError(f"{preset_dir}: {config.weights_dtype} weights move validation Dice by "
                         f"{dtype_check['mean_abs_difference']:.4f} > {config.float16_tolerance}")
    return packaged, dtype_check


def fit_gate(packaged, config: PresetConfig, sets: dict, cache, preset_dir: pathlib.Path, provenance: dict) -> dict:
    """Step 7: fit the CXR gate on the packaged model's embeddings and save it with the preset; returns its report."""
    from .gate_fit import GateConfig, fit_and_measure
    from .segmenter_format import save_segmenter

    specs = {"train": [sets["train"]], "validation": sets["validation"], "test": list(sets["tests"].values())}
    packaged.gate, gate_report = fit_and_measure(packaged, GateConfig(**config.gate), specs, cache,
                                                 root=config.data_root or None)
    save_segmenter(packaged, preset_dir, weights_dtype=config.weights_dtype, extra=provenance)  # + the gate
    return gate_report


def install_preset(preset_dir: pathlib.Path, name: str) -> pathlib.Path:
    """Copy a built preset folder into the package's presets (``tfcxr/segment/presets/<name>/``), replacing it."""
    from .presets import PACKAGED_DIR

    target = PACKAGED_DIR / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(preset_dir, target)
    logger.info("Installed %s into %s", name, target)
    return target


# ----------------------------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------------------------
def build_preset(config: PresetConfig, out, install: bool = False) -> pathlib.Path:
    """Run every step; returns the preset folder ``OUT/<name>``."""
    from .model_card import write_model_card

    out = pathlib.Path(out)
    work = out / "work"
    cache = work / "cache"
    cost = {}
    start = time.time()
    sets = pair_sets(config, work)
    runs = run_stages(config, sets["train"], work)
    cost["fine_tuning_s"] = round(time.time() - start, 1)
    cost["stage_epoch_seconds"] = {run.name: stage_seconds(run) for run in runs}

    step = time.time()
    val_pairs = validation_pairs(sets, runs[0])
    model, checkpoint_scores, setting_scores = select_model(runs, val_pairs, config, cache)
    cost["selection_s"] = round(time.time() - step, 1)

    preset_dir = out / config.name
    provenance = {"provenance": {"config": dataclasses.asdict(config), "checkpoint_scores": checkpoint_scores}}
    packaged, dtype_check = package(model, config, preset_dir, val_pairs, cache, provenance)
    gate_report = None
    if config.gate is not None:
        step = time.time()
        gate_report = fit_gate(packaged, config, sets, cache, preset_dir, provenance)
        cost["gate_s"] = round(time.time() - step, 1)

    step = time.time()
    tests = evaluate_preset(packaged, config, sets["tests"], cache)
    cost["evaluation_s"] = round(time.time() - step, 1)
    cost["images_per_second"] = round(images_per_second(packaged, val_pairs, config.batch_size), 3)
    cost["total_s"] = round(time.time() - start, 1)

    evaluation = {
        "preset": config.name, "baseline": config.baseline, "pairs": sets,
        "validation": {"n": len(val_pairs), "checkpoints": checkpoint_scores, "settings": setting_scores,
                       "chosen_settings": packaged.inference.to_dict(), "weights_dtype_check": dtype_check},
        "tests": tests, "cost": cost, "flag_dice": config.flag_dice, "mask_definition": config.mask_definition,
        "priors": np.round(packaged.priors, 5).tolist(), "gate": gate_report,
    }
    write_text_atomic(preset_dir / "evaluation.json", json.dumps(evaluation, indent=1))
    write_model_card(preset_dir / "MODEL_CARD.md", evaluation)
    if config.heads:
        from .fit_head import build_head

        for head in config.heads:
            build_head(preset_dir, head, sets, cache, config)
    if install:
        install_preset(preset_dir, config.name)
    logger.info("Preset %s written to %s (%s)", config.name, preset_dir, cost)
    return preset_dir


def read_config(path, **overrides) -> PresetConfig:
    """A ``PresetConfig`` from YAML plus the non-None `overrides`; unknown fields and bad values name the file."""
    from tfcxr.config import read_yaml_mapping

    values = read_yaml_mapping(path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - {f.name for f in dataclasses.fields(PresetConfig)}
    if unknown:
        raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
    try:
        return PresetConfig(**values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of `python -m tfcxr.segment.build_preset`."""
    parser = argparse.ArgumentParser(prog="python -m tfcxr.segment.build_preset", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML with PresetConfig fields")
    parser.add_argument("--out", required=True, help="output folder: OUT/work (runs, caches) and OUT/<name>")
    parser.add_argument("--data-root", help="folder of the lung pair sets (overrides the config)")
    parser.add_argument("--install", action=argparse.BooleanOptionalAction, default=False,
                        help="copy the built preset into the package (tfcxr/segment/presets/<name>)")
    return cli.add_log_level(parser)


def main(argv=None) -> int:
    """Run `python -m tfcxr.segment.build_preset` with `argv` (default: sys.argv); returns the exit status."""
    args = build_parser().parse_args(argv)
    return cli.run(_main, args, logger)


def _main(args) -> int:
    config = read_config(args.config, data_root=args.data_root)
    preset_dir = build_preset(config, args.out, install=args.install)
    print(preset_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
