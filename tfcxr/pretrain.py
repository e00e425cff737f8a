"""Self-supervised pretraining of a classifier backbone on unlabelled chest X-rays: `python -m tfcxr.pretrain`.

    python -m tfcxr.pretrain --images DIR [DIR ...] --backbone tiny --out runs/pretrain_tiny \\
        [--exclude-split-of configs/paper_small_nih.yaml] [--masks MASKDIR --mask tight]
    python -m tfcxr.train --backbone tiny --weights runs/pretrain_tiny/backbone.weights.h5 ...

Method: SimSiam (Chen & He, "Exploring simple Siamese representation learning", CVPR 2021).
Two random views of one X-ray pass through the same encoder (backbone + projection MLP);
a small predictor MLP maps one view's projection onto the other's, which is held fixed
(stop-gradient), and the loss is their negative cosine similarity, symmetrised. It suits
CNN backbones on a 2-core CPU and no reachable pretrained weights:
- no negatives, so small batches (16-64) work, unlike SimCLR/MoCo's contrastive losses;
- no momentum encoder (BYOL) and no queue (MoCo): one set of weights, two forward passes
  per step, so the cost is about twice a supervised step;
- it needs no decoder or sparse convolutions, which masked image modelling (MAE, SPCXR's
  group masking) needs before it fits a CNN, and every backbone of `tfcxr.models` works as is.
The collapse SimSiam can fall into is watched: `z_std` (the per-dimension standard deviation
of the l2-normalised projections times sqrt(dim)) is logged every epoch; about 1 is healthy,
0 is collapse.

Views (pure TF, inside tf.data): random resized crop (area `min_crop_scale`..1, aspect
3/4..4/3), optional horizontal flip (off by default: the heart side is anatomy), contrast,
brightness and gamma jitter, and Gaussian noise. With `mask` other than `original` each
image is first masked with its lung mask (`tfcxr.masking.apply_mask`), so the backbone
learns from the same region the classifier will see.

Images: every PNG/JPEG below the `images` folders (recursive). An image is left out when
its file stem or its patient is listed in `exclude_list`, or its patient falls in one of
`exclude_splits` of the split defined by `exclude_split_of` (a `tfcxr.train` or
`tfcxr.experiment` YAML), so pretraining never sees test-split patients. The patient of an
image comes from the `metadata` CSVs (`Image Index`, `Patient ID`) or from NIH's file
name convention `<8-digit patient>_<3-digit follow-up>`.

Output directory (rerun the same command to resume; `epochs` may grow):

    OUT/config.yaml               resolved PretrainConfig
    OUT/images.csv                image_path, image_id, patient_id of every image used
    OUT/checkpoints/              BackupAndRestore state (weights and optimizer)
    OUT/history.csv               per epoch (0-based): loss, z_std, seconds, cpu_seconds
    OUT/backbone.weights.h5       the backbone's weights, for `tfcxr.train --weights PATH`
    OUT/backbone.json             their metadata: backbone, image size, method, images, cost

Exit status: 0 on success, 2 for bad arguments or inputs (one line naming the file).
"""

import argparse
import dataclasses
import logging
import math
import os
import pathlib
import re
import sys
import time

from tfcxr import cli
from tfcxr.config import PRECISIONS, read_yaml_mapping
from tfcxr.masking import DEFAULT_MARGIN, FILL_MODES, MASK_MODES, parse_margin, validate_fill, validate_mask_mode
from tfcxr.models.presets import BACKBONES, get_preset

logger = logging.getLogger("tfcxr.pretrain")

METHOD = "simsiam"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
WEIGHTS_NAME = "backbone.weights.h5"
_NIH_STEM = re.compile(r"^(\d{8})_\d{3}$")
# Fields that may change when a run is resumed in the same directory.
_RESUMABLE_CHANGES = ("epochs", "out")


@dataclasses.dataclass
class PretrainConfig:
    """One pretraining run.

    Attributes:
        images: folder or list of folders searched recursively for PNG/JPEG X-rays.
        out: output directory (default runs/pretrain-<backbone>).
        backbone: a name from `tfcxr.models.presets.BACKBONES`.
        image_size: input S (S x S); use the classifier's `image_size`.
        epochs: total epochs (a resumed run continues to this count).
        batch_size: images per step (each gives two views).
        learning_rate: peak SGD learning rate (cosine decay to 0 over the run).
        momentum: SGD momentum.
        weight_decay: decoupled weight decay.
        projection_dim: width of the projection MLP (3 layers, BN).
        predictor_dim: bottleneck of the predictor MLP (2 layers).
        min_crop_scale: smallest crop area fraction of the random resized crop, in (0, 1].
        flip: random horizontal flips.
        masks: lung mask folder MASKDIR/<stem>.png; needed unless mask=original.
        mask: a mode from `tfcxr.masking.MASK_MODES` applied before the views.
        margin: loose/box margin: fraction of image width or "11px".
        fill: background fill, `zero` or `mean`.
        skip_missing_masks: leave out images without a mask file instead of failing.
        exclude_list: text file of image stems or patient ids to leave out (one per line, # comments).
        exclude_split_of: a `tfcxr.train` or `tfcxr.experiment` YAML whose split defines the patients to leave out.
        exclude_splits: splits of `exclude_split_of` left out (default the test split).
        metadata: CSVs with `Image Index` and `Patient ID` columns (patients of non-NIH file names).
        max_images: use at most this many images (after exclusion; None = all).
        cache: keep the decoded, resized images in memory.
        seed: global seed (Keras, shuffling, views).
        precision: `auto` (mixed_float16 on GPU, float32 on CPU), `float32`, `mixed_float16`.
    """

    images: tuple = ()
    out: str = None
    backbone: str = "tiny"
    image_size: int = 96
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    projection_dim: int = 256
    predictor_dim: int = 64
    min_crop_scale: float = 0.35
    flip: bool = False
    masks: str = None
    mask: str = "original"
    margin: object = DEFAULT_MARGIN
    fill: str = "zero"
    skip_missing_masks: bool = False
    exclude_list: str = None
    exclude_split_of: str = None
    exclude_splits: tuple = ("test",)
    metadata: tuple = ()
    max_images: int = None
    cache: bool = True
    seed: int = 0
    precision: str = "auto"

    def __post_init__(self):
        self.images = (self.images,) if isinstance(self.images, (str, os.PathLike)) else tuple(map(str, self.images))
        self.metadata = (self.metadata,) if isinstance(self.metadata, str) else tuple(map(str, self.metadata or ()))
        self.exclude_splits = (self.exclude_splits,) if isinstance(self.exclude_splits, str) else tuple(
            self.exclude_splits or ())
        if not self.images:
            raise ValueError("`images` must name at least one folder. Received: images=()")
        get_preset(self.backbone)
        validate_mask_mode(self.mask)
        validate_fill(self.fill)
        parse_margin(self.margin)
        if self.mask != "original" and not self.masks:
            raise ValueError(f"mask={self.mask!r} needs a mask folder (`masks`). Received: masks={self.masks!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {PRECISIONS}. Received: precision={self.precision!r}")
        for name in ("image_size", "epochs", "batch_size", "projection_dim", "predictor_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be >= 1. Received: {name}={getattr(self, name)!r}")
        if not 0 < float(self.min_crop_scale) <= 1:
            raise ValueError(f"`min_crop_scale` must be in (0, 1]. Received: min_crop_scale={self.min_crop_scale!r}")
        if not float(self.learning_rate) > 0:
            raise ValueError(f"`learning_rate` must be > 0. Received: learning_rate={self.learning_rate!r}")
        bad = sorted(set(self.exclude_splits) - {"train", "validation", "test"})
        if bad:
            raise ValueError(f"`exclude_splits` must be among ('train', 'validation', 'test'). Received: {bad}")
        if self.max_images is not None and int(self.max_images) < 1:
            raise ValueError(f"`max_images` must be >= 1 or None. Received: max_images={self.max_images!r}")

    def to_dict(self):
        """Plain dict (YAML-safe: tuples become lists)."""
        out = dataclasses.asdict(self)
        for key in ("images", "metadata", "exclude_splits"):
            out[key] = list(out[key])
        return out


FIELDS = tuple(field.name for field in dataclasses.fields(PretrainConfig))


def resolve_pretrain_config(config_path=None, overrides=None):
    """Defaults < YAML file < overrides (None values ignored); errors name the file.

    Returns:
        `PretrainConfig`.
    """
    values = read_yaml_mapping(config_path) if config_path else {}
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"{config_path}: unknown config key(s) {unknown}. Known keys: {', '.join(FIELDS)}")
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    try:
        return PretrainConfig(**values)
    except (TypeError, ValueError) as error:
        where = f"{config_path}: " if config_path else ""
        raise ValueError(f"{where}{error}") from None


# ----------------------------------------------------------------------------- images and exclusions


def normalise_patient_id(text):
    """Patient ids as NIH metadata holds them: "00000013" and "13" are both "13"."""
    text = str(text).strip()
    return str(int(text)) if text.isdigit() else text


def find_image_files(folders):
    """Every PNG/JPEG file below `folders` (recursive, sorted, first of duplicate paths kept).

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: no image was found in a folder.
    """
    paths = []
    for folder in folders:
        folder = pathlib.Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: image folder not found")
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            raise ValueError(f"{folder}: no PNG/JPEG images found (searched recursively)")
        logger.info("%s: %d images", folder, len(found))
        paths += found
    return list(dict.fromkeys(paths))


def read_patient_map(csv_paths):
    """dict image stem -> patient id from metadata CSVs with `Image Index` and `Patient ID` columns."""
    import pandas as pd

    mapping = {}
    for path in csv_paths:
        if not pathlib.Path(path).is_file():
            raise FileNotFoundError(f"{path}: metadata CSV not found")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in ("Image Index", "Patient ID") if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        for image, patient in zip(frame["Image Index"], frame["Patient ID"]):
            mapping[pathlib.Path(image).stem] = normalise_patient_id(patient)
    return mapping


def patient_of(stem, patient_map):
    """Patient id of an image: from `patient_map`, else NIH's `<patient>_<follow-up>` file name, else None."""
    if stem in patient_map:
        return patient_map[stem]
    match = _NIH_STEM.match(stem)
    return normalise_patient_id(match.group(1)) if match else None


def read_exclude_list(path):
    """Set of stripped lines (image stems or patient ids) of `path`, without blanks and # comments."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: exclude list not found")
    entries = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.add(pathlib.Path(line).stem if line.lower().endswith(IMAGE_SUFFIXES) else line)
    return entries


def split_patients(config_path, splits=("test",)):
    """Patients in `splits` of the patient-level split of a `tfcxr.train` or `tfcxr.experiment` YAML.

    The split is the one `tfcxr.train` builds (`tfcxr.data.records.load_records`), for every
    distinct data source and curation among an experiment's cells.

    Returns:
        set of normalised patient ids.
    """
    from tfcxr.config import resolve_config
    from tfcxr.data.pipeline import PipelineConfig
    from tfcxr.data.records import load_records
    from tfcxr.train import resolve_data

    values = read_yaml_mapping(config_path)
    if "grid" in values:
        from tfcxr.experiment import _resolve, parse_experiment

        experiment = parse_experiment(values, str(config_path))
        # The split does not depend on masking: resolve every cell as `original` (no mask files needed).
        configs = [_resolve(experiment, name, dict(overrides, mask="original"))
                   for name, overrides in experiment.cells()]
    else:
        configs = [resolve_config(config_path, {"mask": "original"})]
    patients, seen = set(), set()
    for config in configs:
        key = (config.data, config.tfds_data_dir, repr(config.curation()), config.seed if config.data == "demo" else 0)
        if key in seen:
            continue
        seen.add(key)
        data, _ = resolve_data(config)
        records = load_records(PipelineConfig(data=data, masks=None, mask="original", image_size=config.image_size,
                                              curation=config.curation(), tfds_data_dir=config.tfds_data_dir))
        chosen = records[records["split"].isin(list(splits))]
        patients |= {normalise_patient_id(p) for p in chosen["patient_id"]}
        logger.info("%s: %d patients in split(s) %s of %s are left out", config_path, chosen["patient_id"].nunique(),
                    "/".join(splits), data)
    return patients


def select_images(config):
    """The images to pretrain on, after exclusions.

    Returns:
        DataFrame with image_path, image_id (file name), patient_id ("" when unknown) and
        mask_path ("" for mask=original); ``attrs["excluded"]``: counts per reason.
    """
    import pandas as pd

    paths = find_image_files(config.images)
    patient_map = read_patient_map(config.metadata)
    frame = pd.DataFrame({"image_path": [str(p) for p in paths], "image_id": [p.name for p in paths]})
    stems = [p.stem for p in paths]
    frame["patient_id"] = [patient_of(stem, patient_map) or "" for stem in stems]
    excluded = {}
    keep = pd.Series(True, index=frame.index)
    if config.exclude_list:
        listed = read_exclude_list(config.exclude_list)
        hit = pd.Series([s in listed for s in stems]) | frame["patient_id"].isin(listed)
        excluded["exclude_list"] = int((hit & keep).sum())
        keep &= ~hit
    if config.exclude_split_of:
        held_out = split_patients(config.exclude_split_of, config.exclude_splits)
        hit = frame["patient_id"].isin(held_out)
        excluded["split"] = int((hit & keep).sum())
        keep &= ~hit
        unknown = int((frame["patient_id"][keep] == "").sum())
        if unknown:
            logger.warning("%d images have no known patient id (not NIH-named, not in `metadata`); they cannot be "
                           "matched against the held-out split and are kept", unknown)
    frame = frame[keep].reset_index(drop=True)
    if config.mask != "original":
        frame["mask_path"] = [str(pathlib.Path(config.masks) / f"{pathlib.Path(i).stem}.png") for i in frame["image_id"]]
        has_mask = frame["mask_path"].map(lambda p: pathlib.Path(p).is_file())
        if not has_mask.all():
            missing = frame["mask_path"][~has_mask].tolist()
            if not config.skip_missing_masks:
                raise FileNotFoundError(f"{missing[0]}: lung mask missing ({len(missing)} of {len(frame)} images "
                                        f"have none in {config.masks}); generate them or set skip_missing_masks")
            excluded["no_mask"] = len(missing)
            frame = frame[has_mask].reset_index(drop=True)
    else:
        frame["mask_path"] = ""
    if config.max_images is not None and len(frame) > int(config.max_images):
        frame = frame.sample(n=int(config.max_images), random_state=config.seed).sort_index().reset_index(drop=True)
    if len(frame) < int(config.batch_size):
        raise ValueError(f"{', '.join(config.images)}: {len(frame)} images left after exclusions ({excluded}), "
                         f"fewer than batch_size={config.batch_size}")
    frame.attrs["excluded"] = excluded
    return frame


# ----------------------------------------------------------------------------- tf.data views


def load_image(image_path, mask_path, config):
    """Read, mask (source resolution) and resize one X-ray with TF ops.

    Args:
        image_path, mask_path: tf.string scalars (mask_path unused for mask=original).
        config: `PretrainConfig` (mask, margin, fill, image_size).

    Returns:
        float32 (S, S, 1) in [0, 1], aspect ratio kept (zero padding).
    """
    import tensorflow as tf

    from tfcxr.data.io import decode_image_tf
    from tfcxr.masking import apply_mask

    image = decode_image_tf(tf.io.read_file(image_path))  # (H, W, 1)
    if config.mask != "original":
        lung = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)  # (h, w, 1) uint8
        lung = tf.image.resize(lung, tf.shape(image)[:2], method="nearest")  # (H, W, 1)
        image = apply_mask(image, lung > 127, config.mask, config.margin, config.fill)
    size = int(config.image_size)
    image = tf.image.resize_with_pad(image, size, size, antialias=True)  # (S, S, 1)
    return tf.clip_by_value(image, 0.0, 1.0)


def random_view(image, seed, config):
    """One random view of an image (stateless, so the same seed gives the same view).

    Args:
        image: float32 (S, S, 1) in [0, 1].
        seed: int32/int64 (2,) stateless seed.
        config: `PretrainConfig` (image_size, min_crop_scale, flip).

    Returns:
        float32 (S, S, 1) in [0, 1].
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=8)
    size = int(config.image_size)
    area = tf.random.stateless_uniform([], seeds[0], float(config.min_crop_scale), 1.0)
    ratio = tf.exp(tf.random.stateless_uniform([], seeds[1], math.log(3 / 4), math.log(4 / 3)))
    height = tf.minimum(tf.sqrt(area / ratio), 1.0)
    width = tf.minimum(tf.sqrt(area * ratio), 1.0)
    offset = tf.random.stateless_uniform([2], seeds[2]) * tf.stack([1.0 - height, 1.0 - width])
    box = tf.stack([offset[0], offset[1], offset[0] + height, offset[1] + width])[tf.newaxis]  # (1, 4)
    view = tf.image.crop_and_resize(image[tf.newaxis], box, [0], [size, size])[0]  # (S, S, 1)
    if config.flip:
        flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
        view = tf.cond(flip, lambda: view[:, ::-1], lambda: view)
    contrast = tf.random.stateless_uniform([], seeds[4], 0.6, 1.4)
    brightness = tf.random.stateless_uniform([], seeds[5], -0.15, 0.15)
    mean = tf.reduce_mean(view)
    view = tf.clip_by_value((view - mean) * contrast + mean + brightness, 0.0, 1.0)
    gamma = tf.exp(tf.random.stateless_uniform([], seeds[6], math.log(0.7), math.log(1.4)))
    view = tf.pow(view + 1e-6, gamma)
    view = view + 0.02 * tf.random.stateless_normal(tf.shape(view), seeds[7])
    return tf.clip_by_value(view, 0.0, 1.0)


def make_dataset(frame, config):
    """Batches of two views: ((batch, S, S, 1), (batch, S, S, 1)) float32 in [0, 1], full batches only."""
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    dataset = tf.data.Dataset.from_tensor_slices(
        {"image_path": frame["image_path"].to_numpy(str), "mask_path": frame["mask_path"].to_numpy(str)})
    dataset = dataset.map(lambda r: load_image(r["image_path"], r["mask_path"], config), num_parallel_calls=autotune)
    if config.cache:
        dataset = dataset.cache()
    dataset = dataset.shuffle(len(frame), seed=config.seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=config.seed, rerandomize_each_iteration=True).batch(2)  # (2,) int64
    dataset = tf.data.Dataset.zip((dataset, seeds))
    dataset = dataset.map(
        lambda image, seed: (random_view(image, seed, config), random_view(image, seed[::-1] + 1, config)),
        num_parallel_calls=autotune)
    return dataset.batch(int(config.batch_size), drop_remainder=True).prefetch(autotune)


# ----------------------------------------------------------------------------- SimSiam model


def _simsiam_module():
    import keras
    import tensorflow as tf

    def negative_cosine(p, z):
        """-cos(p, stop_gradient(z)), mean over the batch; p, z: (batch, dim)."""
        p = tf.math.l2_normalize(tf.cast(p, tf.float32), axis=1)
        z = tf.math.l2_normalize(tf.stop_gradient(tf.cast(z, tf.float32)), axis=1)
        return -tf.reduce_mean(tf.reduce_sum(p * z, axis=1))

    def collapse_std(z):
        """Mean per-dimension std of the l2-normalised projections times sqrt(dim): ~1 healthy, 0 collapsed."""
        z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1)
        return tf.reduce_mean(tf.math.reduce_std(z, axis=0)) * tf.sqrt(tf.cast(tf.shape(z)[1], tf.float32))

    class SimSiam(keras.Model):
        """Encoder (preprocessor + backbone + projector) and predictor, trained with `fit` on view pairs.

        Call: images (batch, S, S, 1) float32 in [0, 1] -> projections (batch, projection_dim).
        `fit` data: (view1, view2), both (batch, S, S, 1); logs loss (in [-1, 1]) and z_std.
        """

        def __init__(self, encoder, projector, predictor, **kwargs):
            super().__init__(**kwargs)
            self.encoder = encoder
            self.projector = projector
            self.predictor = predictor
            self.loss_tracker = keras.metrics.Mean(name="loss")
            self.std_tracker = keras.metrics.Mean(name="z_std")

        @property
        def metrics(self):
            return [self.loss_tracker, self.std_tracker]

        def call(self, images, training=False):
            return self.projector(self.encoder(images, training=training), training=training)

        def train_step(self, data):
            view1, view2 = data
            with tf.GradientTape() as tape:
                z1, z2 = self(view1, training=True), self(view2, training=True)  # (batch, projection_dim)
                p1, p2 = self.predictor(z1, training=True), self.predictor(z2, training=True)
                loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
                scaled = self.optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, self.trainable_variables)
            self.optimizer.apply(gradients, self.trainable_variables)
            self.loss_tracker.update_state(loss)
            self.std_tracker.update_state(collapse_std(z1))
            return {m.name: m.result() for m in self.metrics}

    return SimSiam


def build_simsiam(config):
    """SimSiam model for `config.backbone`; returns (model, backbone) where backbone is the `build_backbone` model."""
    import keras

    from tfcxr.models import CxrPreprocessor, build_backbone

    preset = get_preset(config.backbone)
    size, proj, pred = int(config.image_size), int(config.projection_dim), int(config.predictor_dim)
    backbone = build_backbone(config.backbone, size, None)
    inputs = keras.Input((size, size, 1), name="image", dtype="float32")
    x = CxrPreprocessor(preset["preprocessing"], preset["channels"], name="preprocessor")(inputs)
    encoder = keras.Model(inputs, backbone(x), name="encoder")  # (batch, features)

    features = keras.Input((encoder.output_shape[-1],), name="features")
    h = features
    for index in range(2):
        h = keras.layers.Dense(proj, use_bias=False, name=f"projector_dense{index}")(h)
        h = keras.layers.BatchNormalization(name=f"projector_bn{index}")(h)
        h = keras.layers.ReLU(name=f"projector_relu{index}")(h)
    h = keras.layers.Dense(proj, use_bias=False, name="projector_dense2")(h)
    z = keras.layers.BatchNormalization(name="projector_bn2")(h)  # (batch, projection_dim)
    projector = keras.Model(features, z, name="projector")

    z_in = keras.Input((proj,), name="projection")
    h = keras.layers.Dense(pred, use_bias=False, name="predictor_dense0")(z_in)
    h = keras.layers.BatchNormalization(name="predictor_bn0")(h)
    h = keras.layers.ReLU(name="predictor_relu0")(h)
    p = keras.layers.Dense(proj, dtype="float32", name="predictor_dense1")(h)  # (batch, projection_dim)
    predictor = keras.Model(z_in, p, name="predictor")

    model = _simsiam_module()(encoder, projector, predictor, name=f"simsiam_{config.backbone}")
    model(keras.ops.zeros((1, size, size, 1)))  # build every variable before BackupAndRestore loads them
    return model, backbone


# ----------------------------------------------------------------------------- run


def _check_resume(out, config):
    """True when `out` holds a resumable run of the same config; ValueError naming the file otherwise."""
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return False
    saved = PretrainConfig(**read_yaml_mapping(saved_path)).to_dict()
    new = config.to_dict()
    changed = [key for key in new if key not in _RESUMABLE_CHANGES and saved.get(key) != new[key]]
    if changed:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {new[key]!r}" for key in changed)
        raise ValueError(f"{saved_path}: this directory holds a pretraining run with a different config ({details}). "
                         "Use a new --out, or the same settings to resume.")
    return (out / "checkpoints").is_dir()


def _epoch_logger():
    import keras

    class EpochLog(keras.callbacks.Callback):
        """Adds wall and process CPU seconds to the epoch logs and logs one line per epoch (before CSVLogger)."""

        def on_epoch_begin(self, epoch, logs=None):
            self._wall, self._cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            logs["seconds"] = time.perf_counter() - self._wall
            logs["cpu_seconds"] = time.process_time() - self._cpu
            logger.info("epoch %d: loss %.4f, z_std %.3f (1 healthy, 0 collapsed), %.1f s (%.1f CPU s)", epoch + 1,
                        logs.get("loss", math.nan), logs.get("z_std", math.nan), logs["seconds"], logs["cpu_seconds"])

    return EpochLog()


def pretrain(config):
    """Run (or resume) one pretraining job and write the output directory.

    Returns:
        dict with out, weights (path), images, epochs_run, loss, z_std, seconds, cpu_seconds.
    """
    import keras
    import pandas as pd

    from tfcxr.models.backbones import save_backbone_weights
    from tfcxr.train import device_and_strategy

    out = pathlib.Path(config.out or f"runs/pretrain-{config.backbone}")
    config.out = str(out)
    resumed = _check_resume(out, config)
    frame = select_images(config)
    out.mkdir(parents=True, exist_ok=True)
    _write_yaml(config.to_dict(), out / "config.yaml")
    frame[["image_path", "image_id", "patient_id"]].to_csv(out / "images.csv", index=False)
    logger.info("%s: %d images from %d patients (excluded: %s)%s", out, len(frame),
                _count_patients(frame), frame.attrs["excluded"] or "none",
                " (resuming)" if resumed else "")

    keras.utils.set_random_seed(config.seed)
    strategy, device, precision = device_and_strategy(config.precision)
    logger.info("device: %s, precision: %s", device, precision)
    dataset = make_dataset(frame, config)
    steps = len(frame) // int(config.batch_size)
    with strategy.scope():
        model, backbone = build_simsiam(config)
        schedule = keras.optimizers.schedules.CosineDecay(float(config.learning_rate), steps * int(config.epochs))
        model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=float(config.momentum),
                                                     weight_decay=float(config.weight_decay)))
    logger.info("SimSiam on %s: %d parameters (backbone %d), %d steps per epoch", config.backbone,
                model.count_params(), backbone.count_params(), steps)
    callbacks = [
        _epoch_logger(),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=resumed),
        keras.callbacks.BackupAndRestore(str(out / "checkpoints"), delete_checkpoint=False),
    ]
    try:
        model.fit(dataset, epochs=int(config.epochs), callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2,
                  shuffle=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    history = pd.read_csv(out / "history.csv") if (out / "history.csv").is_file() else pd.DataFrame()
    last = history.iloc[-1].to_dict() if len(history) else {}
    metadata = {
        "backbone": config.backbone,
        "image_size": int(config.image_size),
        "channels": get_preset(config.backbone)["channels"],
        "preprocessing": get_preset(config.backbone)["preprocessing"],
        "input": "gray (S, S, 1) float32 in [0, 1], through CxrPreprocessor",
        "method": METHOD,
        "mask": config.mask,
        "images": len(frame),
        "patients": int(_count_patients(frame)),
        "excluded": frame.attrs["excluded"],
        "epochs_run": int(len(history)),
        "loss": last.get("loss"),
        "z_std": last.get("z_std"),
        "seconds": float(history["seconds"].sum()) if "seconds" in history else None,
        "cpu_seconds": float(history["cpu_seconds"].sum()) if "cpu_seconds" in history else None,
        "device": device,
        "precision": precision,
        "config": "config.yaml",
    }
    weights, _ = save_backbone_weights(backbone, out / WEIGHTS_NAME, metadata)
    logger.info("wrote %s (use: python -m tfcxr.train --backbone %s --weights %s)", weights, config.backbone, weights)
    return {"out": str(out), "weights": weights, **{k: metadata[k] for k in (
        "images", "epochs_run", "loss", "z_std", "seconds", "cpu_seconds")}}


def _count_patients(frame):
    return int(frame.loc[frame["patient_id"] != "", "patient_id"].nunique())


def _write_yaml(values, path):
    import yaml

    from tfcxr.atomic import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(values, sort_keys=False))


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tfcxr.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=pathlib.Path, help="YAML config (flags override it), e.g. configs/pretrain_tiny_nih.yaml")
    parser.add_argument("--images", nargs="+", help="folder(s) of unlabelled PNG/JPEG X-rays (recursive)")
    parser.add_argument("--out", help="output directory (default runs/pretrain-<backbone>); rerun to resume")
    parser.add_argument("--backbone", choices=BACKBONES)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--projection-dim", type=int)
    parser.add_argument("--predictor-dim", type=int)
    parser.add_argument("--min-crop-scale", type=float)
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--masks", help="lung mask folder MASKDIR/<stem>.png (for --mask other than original)")
    parser.add_argument("--mask", choices=MASK_MODES, help="masking applied before the views (default original)")
    parser.add_argument("--margin", help="loose/box margin: fraction of width (0.05) or pixels (11px)")
    parser.add_argument("--fill", choices=FILL_MODES)
    parser.add_argument("--skip-missing-masks", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--exclude-list", help="file of image stems or patient ids to leave out")
    parser.add_argument("--exclude-split-of", help="tfcxr.train/tfcxr.experiment YAML whose split's patients are left out")
    parser.add_argument("--exclude-splits", nargs="+", choices=("train", "validation", "test"),
                        help="splits of --exclude-split-of left out (default test)")
    parser.add_argument("--metadata", nargs="+", help="CSV(s) with Image Index, Patient ID (patients of the images)")
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--cache", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--precision", choices=PRECISIONS)
    return cli.add_log_level(parser)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run(_main, args, logger)


def _main(args) -> int:
    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "log_level") and v is not None}
    config = resolve_pretrain_config(args.config, overrides)
    result = pretrain(config)
    logger.info("done: %s (%d images, %d epochs, loss %.4f, z_std %.3f, %.0f CPU s)", result["weights"],
                result["images"], result["epochs_run"], result["loss"] if result["loss"] is not None else math.nan,
                result["z_std"] if result["z_std"] is not None else math.nan, result["cpu_seconds"] or 0.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
