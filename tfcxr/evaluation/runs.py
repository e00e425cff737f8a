"""Read run directories written by `python -m tfcxr.train` (see the run-directory contract).

RUNDIR/config.yaml, RUNDIR/test_predictions.csv (required); RUNDIR/best.keras,
RUNDIR/history.csv, RUNDIR/efficiency.json (optional: the report says what is missing).
"""

import dataclasses
import json
import logging
import math
import pathlib

import numpy as np

from tfcxr.labels import NO_FINDING, TARGETS

logger = logging.getLogger(__name__)

PREDICTIONS = "test_predictions.csv"
CONFIG = "config.yaml"
REQUIRED_COLUMNS = (
    ("image_id", "patient_id", "image_path", "mask_path")
    + tuple(f"y_{t}" for t in TARGETS)
    + (f"y_{NO_FINDING}",)
    + tuple(f"p_{t}" for t in TARGETS)
)


@dataclasses.dataclass
class Run:
    """One evaluated run.

    Attributes:
        run_dir: the run directory.
        name: the directory name.
        label: "backbone / mask" from config.yaml (made unique by the caller).
        config: the resolved config dict.
        predictions: DataFrame of test_predictions.csv, sorted by image_id.
        history: DataFrame of history.csv or None.
        efficiency: dict of efficiency.json or None.
    """

    run_dir: pathlib.Path
    name: str
    label: str
    config: dict
    predictions: object
    history: object = None
    efficiency: dict = None

    @property
    def backbone(self):
        return str(config_value(self.config, "backbone", "?"))

    @property
    def mask(self):
        return str(config_value(self.config, "mask", "?"))

    @property
    def model_path(self):
        return self.run_dir / "best.keras"

    def labels(self):
        """int (num_images, 5) target labels in TARGETS order."""
        return self.predictions[[f"y_{t}" for t in TARGETS]].to_numpy().astype(np.int64)

    def probabilities(self):
        """float64 (num_images, 5) sigmoid outputs in TARGETS order."""
        return self.predictions[[f"p_{t}" for t in TARGETS]].to_numpy().astype(np.float64)

    def no_finding_labels(self):
        """int (num_images,) NIH No Finding label."""
        return self.predictions[f"y_{NO_FINDING}"].to_numpy().astype(np.int64)


def config_value(config, key, default=None):
    """`config[key]`, else the first `config[section][key]` one level down, else `default`."""
    if key in config:
        return config[key]
    for value in config.values():
        if isinstance(value, dict) and key in value:
            return value[key]
    return default


def is_complete(run_dir):
    """True when `run_dir` holds everything a finished training run writes."""
    run_dir = pathlib.Path(run_dir)
    return all((run_dir / name).is_file() for name in (CONFIG, PREDICTIONS, "best.keras", "efficiency.json"))


def load_run(run_dir):
    """Load and validate one run directory.

    Raises:
        FileNotFoundError: naming the missing config.yaml / test_predictions.csv.
        ValueError: naming the file and its missing columns, bad labels or duplicated image ids.
    """
    import pandas as pd
    import yaml

    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run directory not found")
    for name in (CONFIG, PREDICTIONS):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name}: missing; is {run_dir} a finished `tfcxr.train` run?")
    with open(run_dir / CONFIG, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{run_dir / CONFIG}: expected a mapping, got {type(config).__name__}")

    path = run_dir / PREDICTIONS
    df = pd.read_csv(path, dtype={"image_id": str, "patient_id": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    if df.empty:
        raise ValueError(f"{path}: no rows")
    dup = df["image_id"][df["image_id"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: duplicated image_id values {dup[:5]}")
    for col in [f"y_{t}" for t in TARGETS] + [f"y_{NO_FINDING}"]:
        bad = sorted(set(df[col].unique().tolist()) - {0, 1})
        if bad:
            raise ValueError(f"{path}: column {col!r} must hold 0/1. Received values {bad[:5]}")
    probs = df[[f"p_{t}" for t in TARGETS]].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"{path}: p_<target> columns must be finite probabilities in [0, 1]")
    df = df.sort_values("image_id", kind="mergesort").reset_index(drop=True)

    history = None
    if (run_dir / "history.csv").is_file():
        history = pd.read_csv(run_dir / "history.csv")
    efficiency = None
    if (run_dir / "efficiency.json").is_file():
        with open(run_dir / "efficiency.json", encoding="utf-8") as f:
            efficiency = json.load(f)
    run = Run(run_dir=run_dir, name=run_dir.name, label="", config=config, predictions=df,
              history=history, efficiency=efficiency)
    run.label = f"{run.backbone} / {run.mask}"
    return run


# Config keys that do not define a cell: runs that differ only in these are seeds of one cell.
SEED_KEYS = ("seed", "out")
# Config keys ignored when deciding whether two cells differ in one setting (paths that follow the mask mode).
_INCIDENTAL_KEYS = SEED_KEYS + ("masks", "cache")


@dataclasses.dataclass
class Cell:
    """The runs of one grid cell: equal configs except the training seed (and run directory).

    Attributes:
        label: "backbone / mask", plus ", key=value" for every other setting that varies between cells.
        config: the shared config (without the seed keys).
        runs: the `Run`s, sorted by seed.
    """

    label: str
    config: dict
    runs: list

    @property
    def seeds(self):
        return [run_seed(run) for run in self.runs]


def run_seed(run):
    """The training seed of a run (None when its config has none)."""
    return config_value(run.config, "seed")


def short_value(key, value):
    """A short label for a config value: a weights file becomes its folder (pretraining run) or stem."""
    if key == "weights" and isinstance(value, str) and value.lower() not in ("none", "imagenet"):
        path = pathlib.PurePath(value)
        return path.parent.name if path.name.endswith("backbone.weights.h5") and path.parent.name else path.name
    return str(value)


def _cell_key(config):
    return json.dumps({k: v for k, v in config.items() if k not in SEED_KEYS}, sort_keys=True, default=str)


def group_cells(runs):
    """Group runs into `Cell`s (configs equal except `SEED_KEYS`, one run per seed), in first-seen order."""
    groups = {}
    for run in runs:
        key, copy = _cell_key(run.config), 0
        while any(run_seed(other) == run_seed(run) for other in groups.get((key, copy), ())):
            copy += 1  # the same config and seed twice: separate cells, not seeds of one
        groups.setdefault((key, copy), []).append(run)
    configs = [{k: v for k, v in members[0].config.items() if k not in SEED_KEYS} for members in groups.values()]
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if k not in ("backbone", "mask") + _INCIDENTAL_KEYS
               and len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]
    cells = []
    for config, members in zip(configs, groups.values()):
        label = f"{config.get('backbone', '?')} / {config.get('mask', '?')}"
        label += "".join(f", {k}={short_value(k, config.get(k))}" for k in varying)
        members = sorted(members, key=lambda r: (run_seed(r) is None, run_seed(r) if run_seed(r) is not None else 0))
        cells.append(Cell(label=label, config=config, runs=members))
    return cells


def differing_keys(cell_a, cell_b):
    """Config keys (other than seeds and paths that follow the mask mode) whose values differ."""
    keys = (set(cell_a.config) | set(cell_b.config)) - set(_INCIDENTAL_KEYS)
    return sorted(k for k in keys if cell_a.config.get(k) != cell_b.config.get(k))


def load_runs(run_dirs):
    """Load several runs and label them by cell: "backbone / mask[, key=value]", plus ", seed k" for a cell with
    several seeds; " (dirname)" is added when two runs still share a label."""
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        for r in runs:
            r.name = f"{r.run_dir.parent.name}_{r.run_dir.name}"
    for cell in group_cells(runs):
        for r in cell.runs:
            r.label = cell.label if len(cell.runs) == 1 else f"{cell.label}, seed {run_seed(r)}"
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:
            r.label = f"{r.label} ({r.name})"
    return runs


def check_same_test_images(run_a, run_b):
    """Raise ValueError when two runs were not evaluated on the same labelled test images."""
    ids_a = set(run_a.predictions["image_id"])
    ids_b = set(run_b.predictions["image_id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        raise ValueError(
            f"Runs {run_a.run_dir} and {run_b.run_dir} were evaluated on different test images: "
            f"{len(only_a)} only in the first (e.g. {only_a[:3]}), {len(only_b)} only in the second "
            f"(e.g. {only_b[:3]}). Paired DeLong tests need the same test set; evaluate them separately "
            f"or pass --no-require-same-test-set to skip the pairs that differ."
        )
    cols = [f"y_{t}" for t in TARGETS] + [f"y_{NO_FINDING}"]
    ya, yb = run_a.predictions[cols].to_numpy(), run_b.predictions[cols].to_numpy()
    if not np.array_equal(ya, yb):
        rows = np.flatnonzero((ya != yb).any(axis=1))
        raise ValueError(
            f"Runs {run_a.run_dir} and {run_b.run_dir} disagree on the labels of "
            f"{rows.size} test images (e.g. {run_a.predictions['image_id'].iloc[rows[:3]].tolist()})"
        )


def epochs_to_best(history):
    """Best validation AUROC and the 1-based epoch reaching it, from history.csv.

    Uses the first column whose name starts with "val_" and contains "auc" or
    "auroc" (preferring one that contains "macro"); tfcxr.train logs Keras'
    multi-label `AUC` (the macro AUROC over the targets) as "val_auc".

    Returns:
        dict {"column", "best_val_auroc", "epochs_to_best"}, values None when unavailable.
    """
    out = {"column": None, "best_val_auroc": None, "epochs_to_best": None}
    if history is None or history.empty:
        return out
    cols = [c for c in history.columns if c.startswith("val_") and ("auc" in c.lower() or "auroc" in c.lower())]
    if not cols:
        return out
    col = next((c for c in cols if "macro" in c), cols[0])
    values = history[col].to_numpy(dtype=np.float64)
    if not np.any(np.isfinite(values)):
        return out
    best = int(np.nanargmax(values))
    epoch = best + 1
    if "epoch" in history.columns:
        epoch = int(history["epoch"].iloc[best]) + 1  # CSVLogger epochs are 0-based
    val = float(values[best])
    out.update(column=col, best_val_auroc=None if math.isnan(val) else val, epochs_to_best=epoch)
    return out
