"""Fine-tune a SAM-style lung segmenter on image/mask pairs, MedSAM recipe.

- one box prompt per lung component of the ground-truth mask, jittered outwards by up to ``jitter`` px per side;
  optionally (``prior_prompt_fraction`` > 0, prompt augmentation) a share of the examples is prompted with the
  generic prior boxes instead, so the model also learns to return the whole lung from the rough boxes that the
  ``prior`` and ``refine`` strategies start from (the best model is then chosen on the mean of both Dice scores);
- the prompt encoder is frozen; the mask decoder is trained; the image encoder is frozen (default, fast: its
  embeddings are computed once and cached in ``OUT/cache``) or trained (``--no-freeze-image-encoder``);
- loss = Dice + BCE on the low-resolution logits against the per-lung label at that resolution (256 for LiteMedSAM);
- AdamW (lr 1e-4, weight decay 0.01);
- validation Dice / IoU per epoch (ground-truth boxes, no jitter; Dice with the prior boxes too), a
  ``tf.train.CheckpointManager`` checkpoint per epoch in ``OUT/checkpoints`` (a rerun resumes from the last
  finished epoch), the best model by validation Dice saved with ``save_segmenter(model, OUT)``, the fitted prior
  boxes in its ``segmenter.json``, so ``load_segmenter(OUT)`` loads it ready to predict.

The pairs come from ``tfcxr.data.pairs``, the examples from ``tfcxr.segment.examples``, the loss from
``tfcxr.segment.losses`` and the frozen-encoder embeddings from ``tfcxr.segment.embedding_cache``.

Usage::

    python -m tfcxr.segment.finetune --data DIR|pairs.csv|TFDS_NAME --model litemedsam --out runs/seg --epochs 10
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import pathlib
import time

import numpy as np

from tfcxr import cli
from tfcxr.data.pairs import load_pairs, split_pairs

from .embedding_cache import cached_embeddings
from .examples import prepare_examples
from .losses import segmentation_loss
from .prompts import fit_priors

__all__ = ["FinetuneConfig", "build_parser", "finetune", "main", "resolve_config"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FinetuneConfig:
    """Fine-tuning settings; the CLI flags override the YAML (``--config``) which overrides these defaults."""

    data: str = ""
    model: str = "litemedsam"
    out: str = ""
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.01
    freeze_image_encoder: bool = True
    val_fraction: float = 0.1
    seed: int = 0
    jitter: float = 10.0  # max outward shift per box side, model-input pixels (MedSAM: 5-20)
    prior_prompt_fraction: float = 0.0  # share of training examples prompted with the prior boxes, not gt boxes
    dice_weight: float = 1.0
    bce_weight: float = 1.0
    max_pairs: int = 0  # 0 = all; >0 = a seeded subset (e.g. for whole-model fine-tuning on CPU)
    cache_dir: str = ""  # frozen-encoder embedding cache; "" = OUT/cache
    keep_checkpoints: int = 2  # epoch checkpoints kept in OUT/checkpoints (resume; tfcxr.segment.average)
    deterministic: bool = True  # tf.config.experimental.enable_op_determinism: same seed, same weights

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.keep_checkpoints < 1:
            raise ValueError(f"`epochs`, `batch_size` and `keep_checkpoints` must be >= 1. Received: "
                             f"epochs={self.epochs}, batch_size={self.batch_size}, "
                             f"keep_checkpoints={self.keep_checkpoints}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in [0, 1). Received: val_fraction={self.val_fraction}")
        if not 0.0 <= self.prior_prompt_fraction <= 1.0:
            raise ValueError("`prior_prompt_fraction` must be in [0, 1]. "
                             f"Received: prior_prompt_fraction={self.prior_prompt_fraction}")
        if self.lr <= 0:
            raise ValueError(f"`lr` must be > 0. Received: lr={self.lr}")


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------
def jitter_boxes_tf(boxes, max_shift: float, image_size: int, seed):
    """TF MedSAM jitter: every side moves outwards by U[0, max_shift] px; (batch, boxes, 4) -> same, clipped."""
    import tensorflow as tf

    shift = tf.random.stateless_uniform(tf.shape(boxes), seed=seed, maxval=max_shift)
    boxes = boxes + shift * tf.constant([-1.0, -1.0, 1.0, 1.0])
    return tf.clip_by_value(boxes, 0.0, float(image_size - 1))


def _union_logits(logits):
    import tensorflow as tf

    return tf.reduce_max(logits, axis=1)  # union of per-lung masks: max over boxes, (batch, h, w)


def evaluate_examples(model, inputs, boxes, union, embed: bool, batch_size: int) -> dict[str, float]:
    """Mean Dice and IoU of the union mask in the logit frame with ground-truth boxes (no jitter)."""
    import tensorflow as tf

    dices, ious = [], []
    for start in range(0, len(boxes), batch_size):
        batch = inputs[start : start + batch_size]
        embeddings = model.embed(batch) if embed else tf.convert_to_tensor(batch)
        pred = np.asarray(_union_logits(model.decode(embeddings, boxes[start : start + batch_size]))) > 0
        target = union[start : start + batch_size].astype(bool)
        inter = (pred & target).sum(axis=(1, 2))
        total = pred.sum(axis=(1, 2)) + target.sum(axis=(1, 2))
        union_px = (pred | target).sum(axis=(1, 2))
        dices.append(np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0))
        ious.append(np.where(union_px > 0, inter / np.maximum(union_px, 1), 1.0))
    if not dices:
        return {"dice": float("nan"), "iou": float("nan")}
    return {"dice": float(np.concatenate(dices).mean()), "iou": float(np.concatenate(ious).mean())}


@dataclasses.dataclass
class _FinetuneData:
    """The examples of one run (see `prepare_examples`) and what the epochs read.

    ``train_inputs`` / ``val_inputs`` are the cached embeddings (float32 (n, C, e, e)) when the image encoder is
    frozen, else the pixel values (float32 (n, S, S, C)); ``val`` and ``val_inputs`` are None without validation.
    """

    train_pairs: list
    val_pairs: list
    priors: np.ndarray  # float32 (2, 4) normalised, fitted on the training masks
    train: dict
    val: dict | None
    train_inputs: np.ndarray
    val_inputs: np.ndarray | None
    frozen: bool


@dataclasses.dataclass
class _TrainingState:
    """What a checkpoint restores: optimizer, finished epochs and best validation score, and its manager."""

    variables: list
    optimizer: object
    epoch: object  # tf.Variable int64: finished epochs
    best: object  # tf.Variable float32: best selection score so far
    checkpoint: object
    manager: object


_HISTORY_FIELDS = ["epoch", "loss", "val_dice", "val_iou", "val_dice_prior", "seconds", "saved"]


def finetune(config: FinetuneConfig) -> dict:
    """Run (or resume) fine-tuning; returns a summary dict (also written to ``OUT/summary.json``).

    Steps: the run folder (``config.yaml``, op determinism), the data (`_prepare_data`), the optimizer and checkpoint
    (`_restore_or_start`), the compiled step (`_make_train_step`), then per epoch `_train_epoch` and `_end_epoch`
    (validation, best-model save, checkpoint, ``history.csv`` row).
    """
    import tensorflow as tf
    import yaml

    from .loading import load_segmenter

    if not config.out:
        raise ValueError("`out` must be set to the output directory. Received: out=''")
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    out = pathlib.Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))

    model = load_segmenter(config.model)
    data = _prepare_data(model, config, out)
    state = _restore_or_start(model, config, out, data.frozen)
    train_step = _make_train_step(model, config, state, data.frozen)
    for epoch in range(int(state.epoch), config.epochs):
        row = _train_epoch(train_step, data, config, epoch)
        _end_epoch(row, model, data, state, config, out)
    summary = {"epochs_run": int(state.epoch), "best_val_dice": float(state.best),
               "train_pairs": len(data.train_pairs), "val_pairs": len(data.val_pairs),
               "priors": np.round(data.priors, 5).tolist(), "freeze_image_encoder": data.frozen,
               "model": config.model}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _prepare_data(model, config: FinetuneConfig, out: pathlib.Path) -> _FinetuneData:
    """Load and split the pairs (``OUT/split.json``), fit the priors onto `model`, build the examples and inputs."""
    import tensorflow as tf

    pairs = load_pairs(config.data, config.max_pairs, config.seed)
    train_pairs, val_pairs = split_pairs(pairs, config.val_fraction, config.seed)
    (out / "split.json").write_text(json.dumps(
        {"train": [p.name for p in train_pairs], "validation": [p.name for p in val_pairs]}, indent=1))
    logger.info("Pairs: %d train, %d validation (%s)", len(train_pairs), len(val_pairs), config.data)

    probe = model.decode(model.embed(model.preprocess(train_pairs[0].image[None])[0]),
                         tf.constant([[[0.0, 0.0, 1.0, 1.0]]]))
    label_size = int(probe.shape[-1])  # (1, 1, label_size, label_size)
    priors = fit_priors(p.mask for p in train_pairs)
    logger.info("Fitted prior boxes (normalised): %s", np.round(priors, 3).tolist())
    model.priors = priors  # saved with the model, so every later user of it prompts with these boxes
    model.mask_definition = {"name": "trained", "description": f"the lung masks of {config.data} "
                                                               f"({len(train_pairs)} training pairs)"}
    train = prepare_examples(model, train_pairs, label_size, priors)
    val = prepare_examples(model, val_pairs, label_size, priors) if val_pairs else None

    frozen = config.freeze_image_encoder
    if frozen:
        cache = config.cache_dir or out / "cache"
        train_inputs = cached_embeddings(model, train["pixel_values"], cache, config.batch_size)
        val_inputs = cached_embeddings(model, val["pixel_values"], cache, config.batch_size) if val else None
    else:
        train_inputs, val_inputs = train["pixel_values"], (val["pixel_values"] if val else None)
    return _FinetuneData(train_pairs, val_pairs, priors, train, val, train_inputs, val_inputs, frozen)


def _restore_or_start(model, config: FinetuneConfig, out: pathlib.Path, frozen: bool) -> _TrainingState:
    """AdamW over the trained variables and a checkpoint in ``OUT/checkpoints``, restored when one exists.

    Raises:
        ValueError: the latest checkpoint was written for a different model.
    """
    import tensorflow as tf
    import tf_keras

    variables = list(model.mask_decoder.trainable_variables)
    if not frozen:
        variables += list(model.image_encoder.trainable_variables)
    optimizer = tf_keras.optimizers.AdamW(learning_rate=config.lr, weight_decay=config.weight_decay)
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    best_var = tf.Variable(-1.0, dtype=tf.float32, trainable=False, name="best_val_dice")
    checkpoint = tf.train.Checkpoint(image_encoder=model.image_encoder, prompt_encoder=model.prompt_encoder,
                                     mask_decoder=model.mask_decoder, optimizer=optimizer, epoch=epoch_var,
                                     best_val_dice=best_var)
    manager = tf.train.CheckpointManager(checkpoint, out / "checkpoints", max_to_keep=config.keep_checkpoints)
    if manager.latest_checkpoint:
        try:
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        except (ValueError, AssertionError, tf.errors.InvalidArgumentError) as err:
            raise ValueError(f"{manager.latest_checkpoint}: checkpoint does not match model {config.model!r} "
                             f"({str(err).splitlines()[0]}). Use a new --out or the model it was trained with.") \
                from err
        logger.info("Resuming from %s (finished epochs: %d)", manager.latest_checkpoint, int(epoch_var))
    return _TrainingState(variables, optimizer, epoch_var, best_var, checkpoint, manager)


def _make_train_step(model, config: FinetuneConfig, state: _TrainingState, frozen: bool):
    """The compiled step: jitter the boxes, swap in prior boxes for a share of examples, one AdamW update.

    The step takes ``inputs`` (batch, ...) embeddings or pixels, ``boxes`` and ``prior_boxes`` (batch, 2, 4),
    ``labels`` (batch, 2, label_size, label_size) and a stateless ``seed`` (2,) int, and returns the scalar loss.
    """
    import tensorflow as tf

    optimizer, variables = state.optimizer, state.variables

    @tf.function(reduce_retracing=True)
    def train_step(inputs, boxes, prior_boxes, labels, seed):
        boxes = jitter_boxes_tf(boxes, config.jitter, model.image_size, seed)
        # Prompt augmentation: some examples get the generic prior boxes that "prior"/"refine" start from.
        draw = tf.random.stateless_uniform([tf.shape(boxes)[0], 1, 1], seed=seed + 1)  # (batch, 1, 1)
        use_prior = draw < config.prior_prompt_fraction
        boxes = tf.where(use_prior, prior_boxes, boxes)
        with tf.GradientTape() as tape:
            embeddings = inputs if frozen else model.embed(inputs)
            logits = model.decode(embeddings, boxes)  # (batch, 2, label_size, label_size)
            loss = segmentation_loss(logits, labels, config.dice_weight, config.bce_weight)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return train_step


def _train_epoch(train_step, data: _FinetuneData, config: FinetuneConfig, epoch: int) -> dict:
    """One seeded pass over the training examples; returns the history row so far (epoch, loss, seconds)."""
    import tensorflow as tf
    from tqdm import tqdm

    train = data.train
    start_time = time.time()
    n = len(train["boxes"])
    steps = -(-n // config.batch_size)
    order = np.random.default_rng([config.seed, epoch]).permutation(n)
    losses = []
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{config.epochs}", unit="step")
    for step in bar:
        idx = np.sort(order[step * config.batch_size : (step + 1) * config.batch_size])
        loss = train_step(tf.constant(data.train_inputs[idx]), tf.constant(train["boxes"][idx]),
                          tf.constant(train["prior_boxes"][idx]), tf.constant(train["labels"][idx]),
                          tf.constant([config.seed, epoch * steps + step]))
        losses.append(float(loss))
        bar.set_postfix(loss=f"{np.mean(losses):.4f}")
    return {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(time.time() - start_time, 1)}


def _end_epoch(row: dict, model, data: _FinetuneData, state: _TrainingState, config: FinetuneConfig,
               out: pathlib.Path) -> None:
    """Validate, save the model when it is the best so far, checkpoint the epoch and append `row` to history.csv.

    The selection score is the validation Dice with ground-truth boxes; with prompt augmentation the mean of that
    and the Dice with the prior boxes; without validation pairs the negated training loss.
    """
    from .segmenter_format import SAVE_FILENAME, save_segmenter

    val = data.val
    if val is not None:
        scores = evaluate_examples(model, data.val_inputs, val["boxes"], val["union"], not data.frozen,
                                   config.batch_size)
        row.update({"val_dice": scores["dice"], "val_iou": scores["iou"]})
        prior_scores = evaluate_examples(model, data.val_inputs, val["prior_boxes"], val["union"], not data.frozen,
                                         config.batch_size)
        row["val_dice_prior"] = prior_scores["dice"]
    score = row.get("val_dice", -row["loss"])
    if val is not None and config.prior_prompt_fraction > 0:  # trained for both prompt kinds: select on both
        score = (row["val_dice"] + row["val_dice_prior"]) / 2
    if score > float(state.best) or not (out / SAVE_FILENAME).is_file():
        state.best.assign(score)
        save_segmenter(model, out)
        row["saved"] = 1
    logger.info("epoch %d: %s", row["epoch"], row)
    state.epoch.assign(row["epoch"])
    state.manager.save(checkpoint_number=row["epoch"])
    history_path = out / "history.csv"
    new = not history_path.is_file()
    with open(history_path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, _HISTORY_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of `python -m tfcxr.segment.finetune`."""
    parser = argparse.ArgumentParser(prog="python -m tfcxr.segment.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="pairs folder, pairs CSV (image_path,mask_path) or TFDS name")
    parser.add_argument("--model", help="litemedsam | tiny | hub id | model dir (default litemedsam)")
    parser.add_argument("--out", help="output folder (model, priors, checkpoints, history)")
    parser.add_argument("--config", help="YAML with FinetuneConfig fields; flags override it")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", "--lr", dest="lr", type=float,
                        help="AdamW learning rate (the same flag name as tfcxr.train; --lr kept as an alias)")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--freeze-image-encoder", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--val-fraction", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--jitter", type=float, help="max outward box shift per side, model-input px")
    parser.add_argument("--prior-prompt-fraction", type=float,
                        help="share of training examples prompted with the prior boxes instead of gt boxes")
    parser.add_argument("--max-pairs", type=int, help="seeded subset size (0 = all)")
    parser.add_argument("--cache-dir", help="embedding cache for a frozen encoder (default OUT/cache)")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                        help="deterministic TF ops (default on): the same seed gives the same weights")
    parser.add_argument("--keep-checkpoints", type=int,
                        help="epoch checkpoints to keep (default 2; more for tfcxr.segment.average)")
    return cli.add_log_level(parser)


def resolve_config(args: argparse.Namespace) -> FinetuneConfig:
    """Defaults <- YAML (--config) <- command-line flags."""
    from tfcxr.config import read_yaml_mapping

    values = {}
    if args.config:
        loaded = read_yaml_mapping(args.config)
        unknown = set(loaded) - {f.name for f in dataclasses.fields(FinetuneConfig)}
        if unknown:
            raise ValueError(f"{args.config}: unknown fields {sorted(unknown)}")
        values.update(loaded)
    for field in dataclasses.fields(FinetuneConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            values[field.name] = value
    return FinetuneConfig(**values)


def main(argv=None) -> int:
    """Run `python -m tfcxr.segment.finetune` with `argv` (default: sys.argv); returns the exit status."""
    args = build_parser().parse_args(argv)
    return cli.run(_main, args, logger)


def _main(args) -> int:
    config = resolve_config(args)
    if not config.data or not config.out:
        build_parser().error("--data and --out are required (on the command line or in --config)")
    summary = finetune(config)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
