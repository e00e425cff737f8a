"""Load run directories written by `python -m tfcxr.train` for the report, and group them into cells.

The files are read through `tfcxr.rundir.RunDir`: the config and the test predictions are required;
the model, history and efficiency are optional (the report says what is missing).
"""

import dataclasses
import json
import logging
import pathlib

import numpy as np

from tfcxr.labels import NO_FINDING, TARGETS
from tfcxr.rundir import RunDir

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
    """One evaluated run.

    Attributes:
        run_dir: the run directory.
        name: the directory name.
        label: "backbone / mask" from the config (made unique by the caller).
        config: the run's flat config mapping (`RunDir.settings`).
        predictions: DataFrame of the test predictions (`RunDir.predictions`), sorted by image_id.
        history: DataFrame of the per-epoch history or None.
        efficiency: dict of the efficiency file or None.
        files: the `RunDir`.
    """

    run_dir: pathlib.Path
    name: str
    label: str
    config: dict
    predictions: object
    history: object = None
    efficiency: dict = None
    files: RunDir = None

    def __post_init__(self):
        self.files = self.files or RunDir(self.run_dir)

    @property
    def backbone(self):
        return str(self.config.get("backbone", "?"))

    @property
    def mask(self):
        return str(self.config.get("mask", "?"))

    @property
    def model_path(self):
        return self.files.model_path

    @property
    def no_finding_score(self):
        """The run's No Finding score method (config `no_finding_score`, default "max")."""
        return self.files.no_finding_score

    def labels(self):
        """int (num_images, 5) target labels in TARGETS order."""
        return self.predictions[[f"y_{t}" for t in TARGETS]].to_numpy().astype(np.int64)

    def probabilities(self):
        """float64 (num_images, 5) sigmoid outputs in TARGETS order."""
        return self.predictions[[f"p_{t}" for t in TARGETS]].to_numpy().astype(np.float64)

    def no_finding_labels(self):
        """int (num_images,) NIH No Finding label."""
        return self.predictions[f"y_{NO_FINDING}"].to_numpy().astype(np.int64)


def load_run(run_dir):
    """Load and validate one run directory.

    Raises:
        FileNotFoundError: naming the missing config or test predictions file.
        ValueError: naming the file and its missing columns, bad labels or duplicated image ids.
    """
    files = RunDir(run_dir)
    if not files.path.is_dir():
        raise FileNotFoundError(f"{files.path}: run directory not found")
    for path in (files.config_path, files.predictions_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; is {files.path} a finished `tfcxr.train` run?")
    run = Run(run_dir=files.path, name=files.path.name, label="", config=files.settings, predictions=files.predictions(),
              history=files.history(), efficiency=files.efficiency(), files=files)
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
    return run.config.get("seed")


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


def differing_settings(cell_a, cell_b, linked=()):
    """The settings in which two cells differ: `differing_keys`, with each group of `linked` keys counted as one.

    Args:
        cell_a, cell_b: `Cell`s of `group_cells`.
        linked: groups (lists) of config keys that change together, e.g. the fields of an experiment's `variant`
            axis.

    Returns:
        sorted list of str: the differing keys outside every group, and for each group with a differing key the
        whole group's keys joined with "+" (e.g. "freeze_backbone_epochs+weights"), which is not a config key.
    """
    keys = differing_keys(cell_a, cell_b)
    settings = []
    for group in linked:
        if set(group) & set(keys):
            settings.append("+".join(sorted(group)))
            keys = [key for key in keys if key not in set(group)]
    return sorted(settings + keys)


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
    """Raise ValueError when two runs were not evaluated on the same labelled test images of the same patients
    (the paired bootstrap and the clustered DeLong test group images by patient)."""
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
    labels = [f"y_{t}" for t in TARGETS] + [f"y_{NO_FINDING}"]
    pred_a, pred_b = run_a.predictions, run_b.predictions
    checks = (("labels", pred_a[labels].to_numpy(), pred_b[labels].to_numpy()),
              ("patient", pred_a[["patient_id"]].astype(str).to_numpy(), pred_b[["patient_id"]].astype(str).to_numpy()))
    for what, values_a, values_b in checks:
        rows = np.flatnonzero((values_a != values_b).any(axis=1))
        if rows.size:
            raise ValueError(
                f"Runs {run_a.run_dir} and {run_b.run_dir} disagree on the {what} of "
                f"{rows.size} test images (e.g. {pred_a['image_id'].iloc[rows[:3]].tolist()})"
            )
