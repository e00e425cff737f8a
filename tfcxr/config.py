"""TrainConfig: defaults in code, overridden by a YAML file, then by CLI flags.

Precedence: dataclass defaults < `--config FILE.yaml` < command-line flags.
An unknown YAML key is an error naming the key and the file. The resolved
config is written to `RUNDIR/config.yaml` (big_vision style), and every field
is a documented, named parameter. The defaults are the CPU demo.

The masking settings (`mask`, `margin`, `fill`, `image_size`) are one `tfcxr.mask_spec.MaskSpec`,
`TrainConfig.mask_spec`, handed as is to the pipeline and the saved model. In YAML and on the
command line they stay flat keys (`mask: loose`, `margin: 0.05`, `--mask loose --margin 0.05`);
a nested `mask_spec: {mode: loose, margin: 0.05, fill: zero, image_size: 224}` is read too.
`RUNDIR/config.yaml` is written flat, the form every run-dir reader knows.
"""

import dataclasses
import pathlib

import yaml

from tfcxr.data.nih import CurationConfig
from tfcxr.mask_spec import FLAT_KEYS, SPEC_KEY, MaskSpec, mask_spec_properties
from tfcxr.models.classifier import validate_bn_momentum
from tfcxr.models.losses import LOSSES
from tfcxr.models.presets import get_preset
from tfcxr.scoring import NO_FINDING_METHODS

PRECISIONS = ("auto", "float32", "mixed_float16")
DEMO = "demo"


@mask_spec_properties
@dataclasses.dataclass
class TrainConfig:
    """One training run.

    Attributes:
        data: `demo` (built-in synthetic set), an NIH-layout folder, a metadata
            CSV, or `tfds:<name>`.
        masks: lung mask folder (MASKDIR/<stem>.png); default for `demo`: the
            synthetic ground-truth masks, otherwise `<data>/masks` when it exists.
            Not needed for mask=original.
        mask_spec: the run's `tfcxr.mask_spec.MaskSpec`; set it with the flat keys below (or a
            mapping in YAML). Its fields read back as `mask`, `margin`, `fill`, `image_size`.
        mask: `original`, `tight`, `loose`, `box` or `inverse` (tfcxr.masking).
        margin: loose/box/inverse margin: fraction of image width in [0, 1), or "11px" (pixels
            at `image_size`).
        fill: background fill outside the region, `zero` or `mean`.
        backbone: tiny, resnet50, densenet121, efficientnetb0..b4.
        weights: `none`, `imagenet` or a path (tfcxr .keras/.weights.h5 or a
            keras.applications notop .h5).
        image_size: classifier input S (S x S), the training resolution.
        epochs: total epochs (a resumed run continues to this count).
        batch_size: global batch size.
        learning_rate: Adam learning rate.
        loss: `bce`, `weighted_bce` (positive weights from train prevalence) or `focal`.
        dropout: dropout before the sigmoid head.
        bn_momentum: momentum of the backbone's BatchNorm moving statistics (None: the backbone's own,
            0.99 for keras.applications); 0.9 suits short fine-tunes of pretrained backbones.
        freeze_backbone_epochs: linear probing, then fine-tuning (LP-FT): the first N of `epochs` train the
            head alone (backbone frozen, its BatchNorm in inference mode), the rest every layer with a fresh
            optimizer; both phases use `learning_rate`. 0 (default): every layer from the start. Meant for
            pretrained `weights`.
        augment: augment the training split (small affine, brightness, contrast).
        cache: None, `memory` or a file prefix for tf.data caching.
        seed: global seed (Keras, NumPy, TF, shuffling).
        precision: `auto` (mixed_float16 on GPU, float32 on CPU), `float32`, `mixed_float16`.
        out: run directory; default runs/<timestamp>-<backbone>-<mask>.
        views: NIH View Position values kept.
        include_other_findings: keep images with only non-target findings (all-zero labels).
        val_fraction, test_fraction: patient-level split fractions.
        split_seed: seed of the patient-level split.
        official_lists_dir: folder with NIH train_val_list.txt / test_list.txt.
        demo_dir: where `data: demo` is generated (reused when complete).
        demo_num_images: synthetic images for `demo`.
        demo_image_size: synthetic source resolution for `demo`.
        tfds_data_dir: TFDS data_dir for `tfds:` sources.
        exclude_not_cxr: leave out of train/validation the images the mask QC flagged `not_cxr`
            (the count is logged and written to efficiency.json either way).
        no_finding_score: how NIH's No Finding is scored from the five target probabilities,
            `max` (1 - max_k p_k) or `prod` (prod_k (1 - p_k)) (tfcxr.scoring); the report and
            the export use it.
    """

    data: str = DEMO
    masks: str = None
    mask_spec: MaskSpec = None
    backbone: str = "tiny"
    weights: str = "none"
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 2e-3
    loss: str = "bce"
    dropout: float = 0.1
    bn_momentum: float = None
    freeze_backbone_epochs: int = 0
    augment: bool = True
    cache: str = "memory"
    seed: int = 0
    precision: str = "auto"
    out: str = None
    views: tuple = ("PA", "AP")
    include_other_findings: bool = False
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    split_seed: int = 42
    official_lists_dir: str = None
    demo_dir: str = "demo_data/synthetic"
    demo_num_images: int = 900
    demo_image_size: int = 192
    tfds_data_dir: str = None
    exclude_not_cxr: bool = False
    no_finding_score: str = "max"
    mask: dataclasses.InitVar[str] = None
    margin: dataclasses.InitVar[object] = None
    fill: dataclasses.InitVar[str] = None
    image_size: dataclasses.InitVar[int] = None

    def __post_init__(self, mask, margin, fill, image_size):
        self.mask_spec = MaskSpec.resolve(self.mask_spec, mode=mask, margin=margin, fill=fill, image_size=image_size)
        get_preset(self.backbone)
        if self.loss not in LOSSES:
            raise ValueError(f"`loss` must be one of {LOSSES}. Received: loss={self.loss!r}")
        if self.no_finding_score not in NO_FINDING_METHODS:
            raise ValueError(f"`no_finding_score` must be one of {NO_FINDING_METHODS}. "
                             f"Received: no_finding_score={self.no_finding_score!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {PRECISIONS}. Received: precision={self.precision!r}")
        if self.bn_momentum is not None:
            validate_bn_momentum(self.bn_momentum)
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be >= 1. Received: {name}={getattr(self, name)!r}")
        if not 0 <= int(self.freeze_backbone_epochs) < int(self.epochs):
            raise ValueError(f"`freeze_backbone_epochs` must be in [0, epochs={self.epochs}): the last epochs train "
                             f"the backbone. Received: freeze_backbone_epochs={self.freeze_backbone_epochs!r}")
        if not float(self.learning_rate) > 0:
            raise ValueError(f"`learning_rate` must be > 0. Received: learning_rate={self.learning_rate!r}")
        if isinstance(self.cache, str) and self.cache.strip().lower() in ("", "none", "null"):
            self.cache = None
        if self.views is not None:
            self.views = tuple(self.views)

    def curation(self):
        """The `CurationConfig` of this run."""
        return CurationConfig(
            views=self.views,
            include_other_findings=self.include_other_findings,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            seed=self.split_seed,
            official_lists_dir=self.official_lists_dir,
        )

    def to_dict(self):
        """Plain flat dict (YAML-safe: tuples become lists); `mask_spec` becomes its flat keys."""
        out = {}
        for field in dataclasses.fields(self):
            if field.name == SPEC_KEY:
                out.update(self.mask_spec.to_flat())
            else:
                out[field.name] = getattr(self, field.name)
        out["views"] = list(self.views) if self.views is not None else None
        return out


FIELDS = tuple(TrainConfig().to_dict())
# Keys a config file may hold: the flat fields, or the masking settings nested under `mask_spec`.
KNOWN_KEYS = FIELDS + (SPEC_KEY,)


def read_yaml_mapping(path) -> dict:
    """Read a YAML file that must hold a mapping; an empty file gives {}.

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid YAML or not a mapping (named with the file).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as handle:
        try:
            values = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: invalid YAML ({error})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    return values


def read_yaml(path):
    """Read a training config YAML into a dict, checking its keys.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a mapping, or an unknown key (named with the file).
    """
    values = read_yaml_mapping(path)
    unknown = sorted(set(values) - set(KNOWN_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown config key(s) {unknown}. Known keys: {', '.join(KNOWN_KEYS)}")
    nested = set(values) & {SPEC_KEY} and set(values) & set(FLAT_KEYS)
    if nested:
        raise ValueError(f"{path}: give the masking settings either flat ({', '.join(FLAT_KEYS)}) or under "
                         f"`{SPEC_KEY}`, not both. Received both: {SPEC_KEY}, {', '.join(sorted(nested))}")
    return values


def resolve_config(config_path=None, overrides=None):
    """Defaults < YAML file < overrides (None values in `overrides` are ignored).

    Args:
        config_path: optional YAML path.
        overrides: dict of field -> value (e.g. parsed CLI flags).

    Returns:
        `TrainConfig`.
    """
    values = read_yaml(config_path) if config_path else {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in FIELDS:
            raise ValueError(f"unknown config override {key!r}. Known keys: {', '.join(FIELDS)}")
        values[key] = value
    try:
        return TrainConfig(**values)
    except ValueError as error:
        where = f"{config_path}: " if config_path else ""
        raise ValueError(f"{where}{error}") from None


def save_config(config, path):
    """Write the resolved config as YAML (keys in field order)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config.to_dict(), handle, sort_keys=False)


def load_config(path):
    """Read a saved `RUNDIR/config.yaml` back into a `TrainConfig`."""
    return TrainConfig(**read_yaml(path))
