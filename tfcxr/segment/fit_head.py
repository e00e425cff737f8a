"""Train a definition head (:mod:`tfcxr.segment.heads`) on a segmenter and add it to a preset folder.

    python -m tfcxr.segment.fit_head --config configs/preset_litemedsam_lungs.yaml --head classic \
        --data-root DATA --out runs/head_classic [--install]

The head's settings are the entry of that name under ``heads:`` in the preset's build config, so this command and
a full ``tfcxr.segment.build_preset`` fit the same head; this one starts from the installed preset (or ``--base``).

Steps, all on the base preset's frozen image encoder (embeddings cached) and its own prompting:

1. pairs: the training pairs of the preset's split whose ``dataset`` is one of the head's ``datasets`` (e.g. the
   classic Shenzhen/Montgomery masks);
2. boxes: the preset's own refine boxes for every pair (what the head decodes in use), the ground-truth boxes
   (jittered) and the prior boxes; training draws one kind per example;
3. choice: ``folds``-fold cross-validation over those pairs only, for every learning rate in ``learning_rates`` and
   length in ``epochs``: out-of-fold mean Dice of the head decoding the preset's refine boxes (low-resolution frame);
4. cross-fit (only for the test sets named in ``cross_fit``): their pairs in ``folds`` seeded folds; each fold is
   scored (full inference, every prompt, QC flags) by a head with the chosen setting trained on the training pairs
   and every other cross-fitted pair, so every such pair is held out from the head that scores it;
5. fit: the chosen setting on all the pairs (the training pairs and the cross-fitted test pairs); the head is
   stored in ``dtype`` and the change of fitted-pair Dice from float32 is checked against ``dtype_tolerance``;
6. package: the base preset folder plus ``head_<name>.npz``, its entry under ``heads`` and a variant
   ``<preset>-<name>`` (inference ``definition: <name>``) in ``segmenter.json``; the variant is scored on the
   preset's other test sets (every prompt, QC flags) into ``evaluation_<name>.json`` (with the out-of-fold
   scores of step 4) and the model card.

``tfcxr.segment.build_preset`` runs the same steps for the heads its config lists.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import pathlib
import shutil
import time

import numpy as np

from tfcxr import cli
from tfcxr.atomic import write_text_atomic

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class HeadConfig:
    """How a head is trained and chosen (the ``head:`` mapping of the YAML)."""

    name: str = "classic"
    mask_definition: dict = dataclasses.field(default_factory=lambda: {"name": "classic", "description": ""})
    datasets: list = dataclasses.field(default_factory=lambda: ["lungs_shenzhen_montgomery", "shenzhen_lungs"])
    learning_rates: list = dataclasses.field(default_factory=lambda: [1e-3])
    epochs: list = dataclasses.field(default_factory=lambda: [10, 20, 40])  # candidate lengths (one run each)
    folds: int = 5
    batch_size: int = 8
    weight_decay: float = 0.01
    jitter: float = 10.0  # ground-truth boxes: every side moves out by U[0, jitter] input pixels
    own_jitter: float = 4.0  # the preset's own refine boxes, likewise
    gt_fraction: float = 0.4  # share of examples prompted with ground-truth boxes
    own_fraction: float = 0.4  # ... with the preset's refine boxes; the rest with the prior boxes
    dtype: str = "float16"
    dtype_tolerance: float = 0.001
    seed: int = 0
    # Test sets (names under the preset's `tests`) whose pairs also train the head, by `folds`-fold cross-fitting:
    # each of their pairs is scored by a head that never saw it; the shipped head trains on them as well.
    cross_fit: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        from .heads import check_head_name

        check_head_name(self.name)
        self.cross_fit = [self.cross_fit] if isinstance(self.cross_fit, str) else list(self.cross_fit or [])
        if not self.datasets or not self.learning_rates or not self.epochs:
            raise ValueError("`datasets`, `learning_rates` and `epochs` must each list at least one value")
        if any(int(e) < 1 for e in self.epochs) or self.folds < 2:
            raise ValueError(f"`epochs` must be >= 1 and `folds` >= 2. Received: {self.epochs}, {self.folds}")
        if not 0.0 <= self.gt_fraction + self.own_fraction <= 1.0:
            raise ValueError("`gt_fraction + own_fraction` must be in [0, 1]")
        self.epochs = sorted(int(e) for e in self.epochs)


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------
def head_examples(model, pairs, cache=None) -> dict:
    """Embeddings, labels and the three kinds of box for `pairs`.

    Returns:
        dict with ``embeddings`` float32 (n, C, e, e), ``boxes`` / ``own_boxes`` / ``prior_boxes`` float32
        (n, 2, 4) model-input xyxy, ``labels`` uint8 (n, 2, L, L) and ``union`` uint8 (n, L, L), L the decoder's
        logit size.
    """
    import tensorflow as tf

    from .embedding_cache import cached_embeddings
    from .examples import prepare_examples
    from .tf_masks import decode_with_refine

    label_size = 4 * model.embedding_size
    examples = prepare_examples(model, pairs, label_size, priors=model.priors)
    examples["embeddings"] = cached_embeddings(model, examples.pop("pixel_values"), cache)
    rounds = model.inference.rounds
    own = [np.asarray(decode_with_refine(model, tf.constant(examples["embeddings"][i : i + 8]),
                                         tf.constant(examples["prior_boxes"][i : i + 8]), rounds,
                                         model.inference.margin)[1]) for i in range(0, len(pairs), 8)]
    examples["own_boxes"] = np.concatenate(own).astype(np.float32)
    return examples


def head_dice(model, decoder, examples, index, boxes: str = "own_boxes") -> np.ndarray:
    """Per-pair Dice (low-resolution frame) of `decoder` decoding `boxes` (default the preset's own refine boxes).

    Returns:
        float (len(index),): Dice of the union of both lungs' masks against the union label.
    """
    import tensorflow as tf

    from .metrics import dice

    dices = []
    for start in range(0, len(index), 8):
        i = index[start : start + 8]
        logits = model.decode_with(decoder, tf.constant(examples["embeddings"][i]), examples[boxes][i])
        pred = np.asarray(tf.reduce_max(logits, axis=1)) > 0  # union of both lungs
        dices += [dice(p, t) for p, t in zip(pred, examples["union"][i].astype(bool))]
    return np.asarray(dices)


class HeadTrainer:
    """Trains heads of one :class:`HeadConfig` from a model's own decoder, on fixed `examples`.

    The training step is traced once; every :meth:`fit` starts afresh (the head variables back at the model's
    values, the optimizer's moments and step count at zero), so it equals a fit with a new decoder copy and a new
    optimizer, without tracing the decoder's gradient again. The decoder :meth:`fit` returns is the trainer's own:
    read it before the next fit.

    Args:
        model: a ``SamLungModel`` (its ``mask_decoder`` is not changed).
        examples: :func:`head_examples` of the pairs the fits draw from.
        config: the jitter, prompt mix, batch size, weight decay and seed of every fit.
    """

    def __init__(self, model, examples: dict, config: HeadConfig):
        import keras
        import tensorflow as tf

        from .heads import copy_decoder, head_entries

        self.model, self.examples, self.config = model, examples, config
        self.decoder = copy_decoder(model)
        self.variables = [v for _, v in head_entries(self.decoder)]
        self.initial = [v.numpy() for v in self.variables]
        self.optimizer = keras.optimizers.AdamW(config.learning_rates[0], weight_decay=config.weight_decay)
        self.optimizer.build(self.variables)
        self._step = tf.function(self._train_step, reduce_retracing=True)

    def _train_step(self, embeddings, boxes, own, prior, labels, seed):
        import tensorflow as tf

        from .finetune import jitter_boxes_tf
        from .losses import segmentation_loss

        config, size = self.config, self.model.image_size
        boxes = jitter_boxes_tf(boxes, config.jitter, size, seed)
        own = jitter_boxes_tf(own, config.own_jitter, size, seed + 2)
        draw = tf.random.stateless_uniform([tf.shape(boxes)[0], 1, 1], seed=seed + 1)
        boxes = tf.where(draw < config.gt_fraction, boxes,
                         tf.where(draw < config.gt_fraction + config.own_fraction, own, prior))
        with tf.GradientTape() as tape:
            loss = segmentation_loss(self.model.decode_with(self.decoder, embeddings, boxes), labels)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, self.variables), self.variables))
        return loss

    def _reset(self, learning_rate: float) -> None:
        for variable, value in zip(self.variables, self.initial):
            variable.assign(value)
        for variable in self.optimizer.variables:  # step count, moments (and the learning rate, set next)
            variable.assign(np.zeros(variable.shape, variable.dtype))
        self.optimizer.learning_rate = learning_rate

    def fit(self, train_index, learning_rate: float, epochs=None, evaluate_index=None):
        """Train a head on the examples `train_index` for ``max(epochs)`` epochs (default ``config.epochs``).

        Returns:
            (the trained decoder, {epochs: per-pair Dice (`head_dice`) on `evaluate_index`} at each of `epochs`;
            empty without it).
        """
        import tensorflow as tf

        config, examples = self.config, self.examples
        epochs = sorted(int(e) for e in (epochs or config.epochs))
        self._reset(learning_rate)
        scores, rng = {}, np.random.default_rng(config.seed)
        train_index = np.asarray(train_index)
        for epoch in range(1, epochs[-1] + 1):
            order = rng.permutation(train_index)
            for start in range(0, len(order), config.batch_size):
                i = np.sort(order[start : start + config.batch_size])
                self._step(tf.constant(examples["embeddings"][i]), tf.constant(examples["boxes"][i]),
                           tf.constant(examples["own_boxes"][i]), tf.constant(examples["prior_boxes"][i]),
                           tf.constant(examples["labels"][i]), tf.constant([config.seed, epoch * 10_000 + start]))
            if evaluate_index is not None and epoch in epochs:
                scores[epoch] = head_dice(self.model, self.decoder, examples, np.asarray(evaluate_index))
        return self.decoder, scores


def choose_setting(trainer: HeadTrainer, n: int) -> tuple[dict, dict]:
    """Cross-validate every (learning rate, epochs) of the trainer's config over its first `n` examples (the training
    pairs); returns (the best setting, {setting: out-of-fold mean Dice})."""
    config = trainer.config
    if n < config.folds:
        raise ValueError(f"{n} training pairs for the {config.name!r} head: at least `folds`={config.folds} needed")
    folds = np.array_split(np.random.default_rng(config.seed).permutation(n), config.folds)
    table = {}
    for lr in config.learning_rates:
        out_of_fold = {e: np.zeros(n) for e in config.epochs}
        for k, held_out in enumerate(folds):  # fold indices are 0..n-1: out_of_fold[e][held_out] is that pair
            start = time.time()
            rest = np.concatenate([f for j, f in enumerate(folds) if j != k])
            _, scores = trainer.fit(rest, lr, evaluate_index=held_out)
            for epochs, dice in scores.items():
                out_of_fold[epochs][held_out] = dice
            logger.info("head %s lr %g fold %d/%d: %s (%.0f s)", config.name, lr, k + 1, config.folds,
                        {e: round(float(d.mean()), 4) for e, d in scores.items()}, time.time() - start)
        for epochs, dice in out_of_fold.items():
            table[f"lr={lr:g},epochs={epochs}"] = {"learning_rate": lr, "epochs": epochs,
                                                   "mean_dice": float(dice.mean()), "min_dice": float(dice.min())}
    best = max(table.values(), key=lambda row: row["mean_dice"])
    return best, table


def fit_head(model, pairs, config: HeadConfig, cache=None, pooled=None, settings=None):
    """Steps 2-5: choose by cross-validation on `pairs`, cross-fit the `pooled` test pairs, fit on all of them, check
    the stored dtype.

    Args:
        model, pairs, config, cache: the segmenter, the head's training pairs, the :class:`HeadConfig` and the
            embedding cache folder.
        pooled: ``{test set name: pairs}`` of ``config.cross_fit``: scored out of fold (:func:`cross_fit`), then
            added to the final fit.
        settings: scoring settings for `pooled` (``batch_size``, ``bootstrap_resamples``, ``seed``, ``flag_dice``).

    Returns:
        (``MaskHead`` in float32, report dict: n, pair names, chosen setting, the CV table, the baseline Dice of the
        model's own masks on the training pairs, the dtype check on every fitted pair, seconds and, with `pooled`,
        ``cross_fit``).

    Raises:
        ValueError: a pooled set has fewer pairs than ``config.folds``, shares a pair name with the training pairs
            or another pooled set, or comes without `settings`.
    """
    from .head_cross_fit import check_pooled, cross_fit
    from .heads import copy_decoder, read_head

    start = time.time()
    pooled = dict(pooled or {})
    check_pooled(pairs, pooled, config, settings)
    extra = [pair for part in pooled.values() for pair in part]
    examples = head_examples(model, list(pairs) + extra, cache)
    trainer = HeadTrainer(model, examples, config)
    best, table = choose_setting(trainer, len(pairs))
    report = {}
    if pooled:
        report["cross_fit"] = cross_fit(trainer, len(pairs), pooled, best, settings, cache)
    everything = np.arange(len(pairs) + len(extra))
    decoder, _ = trainer.fit(everything, best["learning_rate"], epochs=[best["epochs"]])
    head = read_head(decoder, config.name, config.mask_definition)
    stored = stored_head(head, config.dtype)
    dice32 = head_dice(model, decoder, examples, everything)
    dice_stored = head_dice(model, copy_decoder(model, stored), examples, everything)
    own = head_dice(model, model.mask_decoder, examples, np.arange(len(pairs)))
    check = {"float32_mean_dice": float(dice32.mean()), f"{config.dtype}_mean_dice": float(dice_stored.mean()),
             "mean_abs_difference": float(abs(dice_stored.mean() - dice32.mean())),
             "max_pair_difference": float(np.abs(dice_stored - dice32).max())}
    if check["mean_abs_difference"] > config.dtype_tolerance:
        raise ValueError(f"head {config.name!r}: {config.dtype} moves fitted-pair Dice by "
                         f"{check['mean_abs_difference']:.4f} > {config.dtype_tolerance}")
    report = {"n": len(everything), "n_training_pairs": len(pairs), "pairs": [p.name for p in list(pairs) + extra],
              "chosen": best, "cross_validation": table, "model_own_masks_mean_dice": float(own.mean()),
              "dtype_check": check, **report, "seconds": round(time.time() - start, 1),
              "config": dataclasses.asdict(config)}
    return head, report


def stored_head(head, dtype: str):
    """`head` with its arrays rounded to the stored `dtype` (float32 again), as a saved head loads."""
    from .heads import MaskHead

    return MaskHead(head.name, head.mask_definition,
                    {k: v.astype(dtype).astype(np.float32) for k, v in head.arrays.items()})


# ----------------------------------------------------------------------------------------------------------------
# Packaging
# ----------------------------------------------------------------------------------------------------------------
def training_pairs(train_spec: str, datasets, work: pathlib.Path):
    """The pairs of a train manifest whose ``dataset`` column is in `datasets` (a plain folder: all its pairs)."""
    from tfcxr.data.pairs import load_pairs

    path = pathlib.Path(train_spec)
    if not (path.is_file() and path.suffix.lower() == ".csv"):
        return load_pairs(train_spec)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    chosen = [r for r in rows if r.get("dataset") in set(datasets)]
    if not chosen:
        raise ValueError(f"{path}: no training pairs from datasets {list(datasets)}")
    subset = work / f"train_{'_'.join(sorted(datasets))}.csv"
    subset.parent.mkdir(parents=True, exist_ok=True)
    with open(subset, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return load_pairs(str(subset))


def add_head(preset_dir: pathlib.Path, head, report: dict, variant: str) -> None:
    """Write the head beside the preset and declare it (``heads``) and its variant (``variants``) in the JSON."""
    from . import segmenter_format

    meta_path = preset_dir / segmenter_format.SAVE_FILENAME
    meta = json.loads(meta_path.read_text())
    meta.setdefault("heads", {})[head.name] = head.save(preset_dir, report["config"]["dtype"])
    meta.setdefault("variants", {})[variant] = {"inference": {"definition": head.name},
                                                "description": head.mask_definition.get("description", "")}
    meta.setdefault("provenance", {}).setdefault("heads", {})[head.name] = {
        k: report[k] for k in ("n", "n_training_pairs", "pairs", "chosen", "cross_validation", "dtype_check", "config")}
    write_text_atomic(meta_path, json.dumps(meta, indent=2))


def build_head(preset_dir: pathlib.Path, config: HeadConfig, sets: dict, cache, settings) -> dict:
    """Steps 1-6 on the preset folder `preset_dir` (changed in place); returns the head's evaluation.

    Args:
        preset_dir: a saved segmenter folder (the base preset).
        config: the :class:`HeadConfig`.
        sets: ``{"train": spec, "tests": {name: spec}}`` (``tfcxr.segment.build_preset.pair_sets``).
        cache: embedding cache folder.
        settings: anything with ``batch_size``, ``bootstrap_resamples``, ``seed`` and ``flag_dice`` (a
            ``PresetConfig``), for scoring the tests.
    """
    from .loading import load_segmenter
    from .model_card import render_folder
    from .preset_evaluation import evaluate_tests

    from tfcxr.data.pairs import load_pairs

    unknown = sorted(set(config.cross_fit) - set(sets["tests"]))
    if unknown:
        raise ValueError(f"head {config.name!r}: `cross_fit` names {unknown}, not test sets of the preset "
                         f"(test sets: {sorted(sets['tests'])})")
    model = load_segmenter(str(preset_dir))
    pairs = training_pairs(sets["train"], config.datasets, preset_dir.parent / "work")
    pooled = {name: load_pairs(sets["tests"][name]) for name in config.cross_fit}
    head, report = fit_head(model, pairs, config, cache, pooled=pooled, settings=settings)
    variant = f"{preset_dir.name}-{config.name}"
    add_head(preset_dir, head, report, variant)
    packaged = load_segmenter(str(preset_dir))
    packaged.inference = packaged.inference.replace(definition=config.name)
    start = time.time()
    held_out = {name: spec for name, spec in sets["tests"].items() if name not in pooled}  # the rest trained it
    report["tests"] = evaluate_tests(packaged, held_out, settings, cache, with_flags=True)
    report["evaluation_s"] = round(time.time() - start, 1)
    report.update(variant=variant, head=config.name, mask_definition=config.mask_definition)
    write_text_atomic(preset_dir / f"evaluation_{config.name}.json", json.dumps(report, indent=1))
    if (preset_dir / "evaluation.json").is_file():
        write_text_atomic(preset_dir / "MODEL_CARD.md", render_folder(preset_dir))
    return report


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of `python -m tfcxr.segment.fit_head`."""
    parser = argparse.ArgumentParser(
        prog="python -m tfcxr.segment.fit_head",
        description="Train a mask-definition head on a segmenter preset (cross-validated on its training pairs), "
                    "add it to a copy of the preset and score the new variant on the preset's test pairs (out of "
                    "fold for the test sets the head's `cross_fit` names).")
    parser.add_argument("--config", required=True, help="the preset's build config (PresetConfig YAML) with `heads`")
    parser.add_argument("--head", required=True, help="name of the head under `heads:` in the config")
    parser.add_argument("--data-root", help="folder of the lung pair sets (overrides the preset config's)")
    parser.add_argument("--out", required=True, help="output folder; the preset is written to OUT/<name>/")
    parser.add_argument("--base", help="segmenter to start from (default: the installed preset of that name)")
    parser.add_argument("--install", action=argparse.BooleanOptionalAction, default=False,
                        help="copy the result into the package (tfcxr/segment/presets/<name>)")
    return cli.add_log_level(parser)


def main(argv=None) -> int:
    """Entry point of ``python -m tfcxr.segment.fit_head``."""
    args = build_parser().parse_args(argv)
    return cli.run(_main, args, logger)


def _main(args) -> int:
    from . import build_preset, presets

    preset = build_preset.read_config(args.config, data_root=args.data_root)
    by_name = {head.name: head for head in preset.heads}
    if args.head not in by_name:
        raise ValueError(f"{args.config}: no head {args.head!r} under `heads` (heads: {sorted(by_name) or 'none'})")
    head_config = by_name[args.head]
    out = pathlib.Path(args.out)
    sets = build_preset.pair_sets(preset, out / "work")
    base = pathlib.Path(args.base) if args.base else presets.packaged_presets()[preset.name]
    preset_dir = out / preset.name
    shutil.rmtree(preset_dir, ignore_errors=True)
    shutil.copytree(base, preset_dir)
    report = build_head(preset_dir, head_config, sets, out / "work" / "cache", preset)
    logger.info("head %s: chosen %s; written to %s", head_config.name, report["chosen"], preset_dir)
    if args.install:
        build_preset.install_preset(preset_dir, preset.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
