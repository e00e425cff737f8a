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
  finished epoch), the best model by validation Dice saved with ``model.save(OUT)``, the fitted prior boxes in its
  ``segmenter.json``, so ``load_segmenter(OUT)`` loads it ready to predict.

Usage::

    python -m tfcxr.segment.finetune --data DIR|pairs.csv|TFDS_NAME --model litemedsam --out runs/seg --epochs 10
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import logging
import pathlib
import time

import numpy as np

from tfcxr.atomic import atomic_write

from .prompts import DEFAULT_PRIORS, fit_priors, input_boxes, lung_components, mask_box, normalize_boxes

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
# Data
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Pair:
    """One labelled example: ``image`` float32 (height, width, 1) in [0, 1], ``mask`` bool (height, width)."""

    name: str
    image: np.ndarray
    mask: np.ndarray


def _pair_files(spec: str) -> list:
    """``tfcxr.data.pairs.ImageMaskPair`` list of a pairs folder or of a CSV manifest (image_path, mask_path)."""
    from tfcxr.data.pairs import ImageMaskPair, find_pairs

    path = pathlib.Path(spec)
    if not (path.is_file() and path.suffix.lower() == ".csv"):
        return find_pairs(path)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"image_path", "mask_path"} <= set(rows[0]):
        raise ValueError(f"{path}: a pairs manifest needs `image_path` and `mask_path` columns. "
                         f"Received: {sorted(rows[0])}")
    return [ImageMaskPair(pathlib.Path(r["image_path"]), (pathlib.Path(r["mask_path"]),),
                          pathlib.Path(r["image_path"]).stem, "manifest") for r in rows]


def load_pairs(spec: str, max_pairs: int = 0, seed: int = 0) -> list[Pair]:
    """Load labelled lung pairs from a directory of pairs, a CSV manifest, or a TFDS dataset name.

    Bad pairs (unreadable image or mask, mask size different from the image) are skipped with a warning that names
    the file; the count is logged.

    Args:
        spec: a folder understood by ``tfcxr.data.pairs`` (``images/`` + ``masks/``, Shenzhen ``_mask``,
            Montgomery), a ``.csv`` with ``image_path, mask_path`` columns, or a TFDS name (``cxr_lung_masks``).
        max_pairs: 0 for all, else a seeded random subset of that size.
        seed: subset seed.

    Returns:
        list of :class:`Pair`, in a stable order.
    """
    from tfcxr.data.io import ImageReadError
    from tfcxr.data.pairs import read_pair

    if pathlib.Path(spec).exists():
        files = _pair_files(spec)
        if max_pairs and len(files) > max_pairs:
            keep = np.sort(np.random.default_rng(seed).choice(len(files), max_pairs, replace=False))
            files = [files[i] for i in keep]
        pairs, bad = [], 0
        for pair_files in files:
            try:
                image, mask = read_pair(pair_files)
            except ImageReadError as err:
                bad += 1
                logger.warning("Skipping pair: %s", err)
                continue
            pairs.append(Pair(pair_files.stem, image, mask))
        if bad:
            logger.warning("Skipped %d of %d pairs from %s", bad, len(files), spec)
    else:
        pairs = _load_tfds_pairs(spec, max_pairs, seed)
    if not pairs:
        raise ValueError(f"{spec}: no usable image/mask pairs found")
    return pairs


def _load_tfds_pairs(name: str, max_pairs: int, seed: int) -> list[Pair]:
    import tensorflow_datasets as tfds

    try:
        splits = tfds.builder(name).info.splits
    except Exception as err:  # tfds raises DatasetNotFoundError and others
        raise ValueError(f"`data` is neither an existing path nor a TFDS dataset. Received: data={name!r} ({err})")
    pairs = []
    for split in sorted(splits.keys()):
        for i, example in enumerate(tfds.as_numpy(tfds.load(name, split=split))):
            image = np.asarray(example["image"])
            scale = 65535.0 if image.dtype == np.uint16 else 255.0
            image = (image.astype(np.float32) / scale).reshape(image.shape[0], image.shape[1], 1)
            mask = np.asarray(example["mask"]).reshape(image.shape[:2]) > 0
            key = example.get("image_id", example.get("id", f"{split}-{i}"))
            pairs.append(Pair(key.decode() if isinstance(key, bytes) else str(key), image, mask))
    if max_pairs and len(pairs) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False))
        pairs = [pairs[i] for i in keep]
    return pairs


def split_pairs(pairs: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded train/validation split -> (train, val); at least one validation pair when `val_fraction` > 0."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = min(len(pairs) - 1, max(1, round(val_fraction * len(pairs)))) if val_fraction > 0 else 0
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    return [pairs[i] for i in train], [pairs[i] for i in val]


def _label_frame(model, sizes, label_size: int):
    """(content_height, content_width) of the original image inside the (label_size, label_size) logit frame."""
    corner = np.asarray(input_boxes(model, np.asarray([[[0.0, 0.0, 1.0, 1.0]]], np.float32), sizes))[0, 0]
    scale = label_size / float(model.image_size)
    return max(1, round(corner[3] * scale)), max(1, round(corner[2] * scale))


def to_label_frame(mask, frame: tuple[int, int], label_size: int) -> np.ndarray:
    """Resize a bool (height, width) mask into the top-left `frame` of a (label_size, label_size) uint8 canvas."""
    import cv2

    small = cv2.resize(mask.astype(np.float32), (frame[1], frame[0]), interpolation=cv2.INTER_AREA) >= 0.5
    label = np.zeros((label_size, label_size), np.uint8)
    label[: frame[0], : frame[1]] = small
    return label


def prepare_examples(model, pairs: list[Pair], label_size: int, priors=None) -> dict[str, np.ndarray]:
    """Model inputs, per-lung boxes and labels for a list of pairs.

    Each image gets two boxes (one per lung component, image-left first; a single component is repeated) and a
    label per box: that component's mask in the low-resolution logit frame.

    Args:
        model: a ``SamLungModel``.
        pairs: the labelled pairs.
        label_size: side of the decoder's low-resolution logits.
        priors: float32 (2, 4) normalised prior boxes (image-left lung first); :data:`DEFAULT_PRIORS` when None.

    Returns:
        dict with ``pixel_values`` (n, S, S, C) float32, ``boxes`` (n, 2, 4) float32 model-input xyxy,
        ``prior_boxes`` (n, 2, 4) the prior boxes in the same frame, ``labels`` (n, 2, label_size, label_size)
        uint8 in {0, 1}, ``union`` (n, label_size, label_size) uint8.
    """
    priors = DEFAULT_PRIORS if priors is None else np.asarray(priors, np.float32)
    pixel_values, boxes, prior_boxes, labels = [], [], [], []
    for pair in pairs:
        values, sizes = model.preprocess(pair.image[None])
        frame = _label_frame(model, sizes, label_size)
        parts = lung_components(pair.mask, max_components=2) or [pair.mask]
        parts = (parts * 2)[:2]
        norm = np.stack([normalize_boxes(mask_box(p), pair.mask.shape) if p.any() else priors[i]
                         for i, p in enumerate(parts)])
        boxes.append(np.asarray(input_boxes(model, norm[None], sizes))[0])
        prior_boxes.append(np.asarray(input_boxes(model, priors[None], sizes))[0])
        labels.append(np.stack([to_label_frame(p, frame, label_size) for p in parts]))
        pixel_values.append(np.asarray(values)[0])
    labels = np.stack(labels)
    return {"pixel_values": np.stack(pixel_values), "boxes": np.stack(boxes).astype(np.float32),
            "prior_boxes": np.stack(prior_boxes).astype(np.float32), "labels": labels, "union": labels.max(axis=1)}


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


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------
def segmentation_loss(logits, labels, dice_weight: float = 1.0, bce_weight: float = 1.0):
    """Dice + BCE on logits.

    Args:
        logits: float32 (batch, boxes, h, w).
        labels: float32 (batch, boxes, h, w) in {0, 1}.

    Returns:
        scalar float32: ``dice_weight * (1 - soft Dice) + bce_weight * BCE``, averaged over boxes.
    """
    import tensorflow as tf

    labels = tf.cast(labels, tf.float32)
    probs = tf.sigmoid(logits)
    inter = tf.reduce_sum(probs * labels, axis=[-2, -1])
    total = tf.reduce_sum(probs, axis=[-2, -1]) + tf.reduce_sum(labels, axis=[-2, -1])
    dice_loss = 1.0 - tf.reduce_mean((2.0 * inter + 1.0) / (total + 1.0))
    bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
    return dice_weight * dice_loss + bce_weight * bce


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


def finetune(config: FinetuneConfig) -> dict:
    """Run (or resume) fine-tuning; returns a summary dict (also written to ``OUT/summary.json``)."""
    import tensorflow as tf
    import tf_keras
    import yaml
    from tqdm import tqdm

    from .model import SAVE_FILENAME, load_segmenter

    if not config.out:
        raise ValueError("`out` must be set to the output directory. Received: out=''")
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    out = pathlib.Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))

    model = load_segmenter(config.model)
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

    history_path = out / "history.csv"
    n = len(train["boxes"])
    steps = -(-n // config.batch_size)
    for epoch in range(int(epoch_var), config.epochs):
        start_time = time.time()
        order = np.random.default_rng([config.seed, epoch]).permutation(n)
        losses = []
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{config.epochs}", unit="step")
        for step in bar:
            idx = np.sort(order[step * config.batch_size : (step + 1) * config.batch_size])
            loss = train_step(tf.constant(train_inputs[idx]), tf.constant(train["boxes"][idx]),
                              tf.constant(train["prior_boxes"][idx]), tf.constant(train["labels"][idx]),
                              tf.constant([config.seed, epoch * steps + step]))
            losses.append(float(loss))
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(time.time() - start_time, 1)}
        if val is not None:
            scores = evaluate_examples(model, val_inputs, val["boxes"], val["union"], not frozen, config.batch_size)
            row.update({"val_dice": scores["dice"], "val_iou": scores["iou"]})
            prior_scores = evaluate_examples(model, val_inputs, val["prior_boxes"], val["union"], not frozen,
                                             config.batch_size)
            row["val_dice_prior"] = prior_scores["dice"]
        score = row.get("val_dice", -row["loss"])
        if val is not None and config.prior_prompt_fraction > 0:  # trained for both prompt kinds: select on both
            score = (row["val_dice"] + row["val_dice_prior"]) / 2
        if score > float(best_var) or not (out / SAVE_FILENAME).is_file():
            best_var.assign(score)
            model.save(out)
            row["saved"] = 1
        logger.info("epoch %d: %s", epoch + 1, row)
        epoch_var.assign(epoch + 1)
        manager.save(checkpoint_number=epoch + 1)
        new = not history_path.is_file()
        with open(history_path, "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["epoch", "loss", "val_dice", "val_iou", "val_dice_prior", "seconds",
                                             "saved"])
            if new:
                writer.writeheader()
            writer.writerow(row)
    summary = {"epochs_run": int(epoch_var), "best_val_dice": float(best_var), "train_pairs": len(train_pairs),
               "val_pairs": len(val_pairs), "priors": np.round(priors, 5).tolist(),
               "freeze_image_encoder": frozen, "model": config.model}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfcxr.segment.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="pairs folder, pairs CSV (image_path,mask_path) or TFDS name")
    parser.add_argument("--model", help="litemedsam | tiny | hub id | model dir (default litemedsam)")
    parser.add_argument("--out", help="output folder (model, priors, checkpoints, history)")
    parser.add_argument("--config", help="YAML with FinetuneConfig fields; flags override it")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
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
    return parser


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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = resolve_config(args)
    if not config.data or not config.out:
        build_parser().error("--data and --out are required (on the command line or in --config)")
    summary = finetune(config)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
