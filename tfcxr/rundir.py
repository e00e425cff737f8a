"""`RunDir`: the one owner of a training run directory's layout and files.

Contract (``tfcxr.train`` writes every file; the readers go through `RunDir`)::

    file                   written by        read by
    config.yaml            train             train (resume), experiment, evaluation, export
    best.keras             train             evaluation (Grad-CAM), export
    checkpoints/           train             train (resume)
    history.csv            train             train (resume: best so far), evaluation
    tensorboard/           train             TensorBoard
    test_predictions.csv   train             evaluation
    efficiency.json        train             evaluation

``config.yaml`` is the resolved `tfcxr.config.TrainConfig`, written flat. It is read once:
`RunDir.settings` is the flat mapping (one level of sections such as ``model:`` flattened, for
older run dirs), `RunDir.config` the `TrainConfig` built from it. ``history.csv`` holds one row
per epoch (``epoch`` 0-based) with the monitored ``val_macro_auroc``; `RunDir.best` is the best
epoch (1-based) and value.
"""

import dataclasses
import functools
import json
import math
import pathlib

import numpy as np

from tfcxr.labels import NO_FINDING, TARGETS

MONITOR = "val_macro_auroc"
# Fields that may change when a run is resumed (or found complete) in the same directory.
RESUMABLE_CHANGES = ("epochs", "out")
PREDICTION_COLUMNS = (
    ("image_id", "patient_id", "image_path", "mask_path")
    + tuple(f"y_{t}" for t in TARGETS)
    + (f"y_{NO_FINDING}",)
    + tuple(f"p_{t}" for t in TARGETS)
)


@dataclasses.dataclass(frozen=True)
class Best:
    """The best epoch of a history: `column` monitored, its `value`, the 1-based `epoch` (None when unknown)."""

    column: str = None
    value: float = None
    epoch: int = None


def best_of(history) -> Best:
    """The best epoch of a ``history.csv`` DataFrame (or None).

    Monitors ``val_macro_auroc``; an older history without it falls back to the first
    ``val_*auc*``/``val_*auroc*`` column (one holding "macro" preferred).
    """
    if history is None or history.empty:
        return Best()
    if MONITOR in history.columns:
        column = MONITOR
    else:
        columns = [c for c in history.columns if c.startswith("val_") and ("auc" in c.lower() or "auroc" in c.lower())]
        if not columns:
            return Best()
        column = next((c for c in columns if "macro" in c), columns[0])
    values = history[column].to_numpy(dtype=np.float64)
    if not np.any(np.isfinite(values)):
        return Best()
    index = int(np.nanargmax(values))
    epoch = int(history["epoch"].iloc[index]) + 1 if "epoch" in history.columns else index + 1
    value = float(values[index])
    return Best(column=column, value=None if math.isnan(value) else value, epoch=epoch)


class RunDir:
    """A run directory: its file names, and typed readers of what `tfcxr.train` wrote there.

    Args:
        path: the run directory (need not exist yet).
    """

    CONFIG = "config.yaml"
    MODEL = "best.keras"
    CHECKPOINTS = "checkpoints"
    HISTORY = "history.csv"
    TENSORBOARD = "tensorboard"
    PREDICTIONS = "test_predictions.csv"
    EFFICIENCY = "efficiency.json"
    FILES = (CONFIG, MODEL, CHECKPOINTS, HISTORY, TENSORBOARD, PREDICTIONS, EFFICIENCY)
    # What a finished run holds (`is_complete`).
    COMPLETE = (CONFIG, PREDICTIONS, MODEL, EFFICIENCY)

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __repr__(self):
        return f"RunDir({str(self.path)!r})"

    config_path = property(lambda self: self.path / self.CONFIG)
    model_path = property(lambda self: self.path / self.MODEL)
    checkpoints_path = property(lambda self: self.path / self.CHECKPOINTS)
    history_path = property(lambda self: self.path / self.HISTORY)
    tensorboard_path = property(lambda self: self.path / self.TENSORBOARD)
    predictions_path = property(lambda self: self.path / self.PREDICTIONS)
    efficiency_path = property(lambda self: self.path / self.EFFICIENCY)

    def is_complete(self) -> bool:
        """True when the directory holds everything a finished training run writes."""
        return all((self.path / name).is_file() for name in self.COMPLETE)

    def clear_results(self) -> None:
        """Delete the test predictions and efficiency.json, so that a finished run trained on for more epochs is not
        complete (nor reported with its old predictions) until the longer run finishes."""
        for path in (self.predictions_path, self.efficiency_path):
            path.unlink(missing_ok=True)

    # config.yaml

    @functools.cached_property
    def settings(self) -> dict:
        """config.yaml as a flat mapping: keys of one level of sections lifted (the first wins), and a nested
        `mask_spec: {mode, margin, fill, image_size}` given as the flat `mask`, `margin`, `fill`, `image_size`.

        Raises:
            FileNotFoundError: no config.yaml.
            ValueError: invalid YAML or not a mapping (naming the file).
        """
        from tfcxr.config import read_yaml_mapping
        from tfcxr.mask_spec import FLAT_KEYS, SPEC_KEY

        values = read_yaml_mapping(self.config_path)
        sections = [values] + [v for k, v in values.items() if isinstance(v, dict) and k != SPEC_KEY]
        flat = {}
        for section in sections:
            for key, value in section.items():
                if not isinstance(value, dict):
                    flat.setdefault(key, value)
        spec = next((s[SPEC_KEY] for s in sections if isinstance(s.get(SPEC_KEY), dict)), None)
        if spec is not None:  # the nested form wins, as in `MaskSpec.from_config`
            flat.update({key: spec[field] for key, field in FLAT_KEYS.items() if field in spec})
        return flat

    @functools.cached_property
    def config(self):
        """The run's `TrainConfig` (a config.yaml without newer fields takes their defaults).

        Raises:
            ValueError: an unknown key or bad value, naming config.yaml.
        """
        from tfcxr.config import KNOWN_KEYS, TrainConfig

        unknown = sorted(set(self.settings) - set(KNOWN_KEYS))
        if unknown:
            raise ValueError(f"{self.config_path}: unknown config key(s) {unknown}")
        try:
            return TrainConfig(**self.settings)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{self.config_path}: {error}") from None

    def setting(self, key, default=None):
        """One config.yaml value, or `default`."""
        return self.settings.get(key, default)

    def mask_spec(self, default=None):
        """The run's `tfcxr.mask_spec.MaskSpec` (flat or nested keys); missing keys take `default`'s values."""
        from tfcxr.mask_spec import MaskSpec

        try:
            return MaskSpec.from_config(self.settings, default=default)
        except ValueError as error:
            raise ValueError(f"{self.config_path}: {error}") from None

    @property
    def no_finding_score(self) -> str:
        """The run's No Finding score method (`tfcxr.scoring`); "max" for run dirs written before the field."""
        from tfcxr.scoring import NO_FINDING_METHODS

        method = self.setting("no_finding_score", "max")
        if method not in NO_FINDING_METHODS:
            raise ValueError(f"{self.config_path}: `no_finding_score` must be one of {NO_FINDING_METHODS}. "
                             f"Received: no_finding_score={method!r}")
        return method

    def save_config(self, config) -> None:
        """Write `config` (a `TrainConfig`) as config.yaml."""
        from tfcxr.config import save_config

        save_config(config, self.config_path)
        self.__dict__.pop("settings", None)
        self.__dict__.pop("config", None)

    def config_changes(self, config) -> dict:
        """{key: (saved, new)} of the fields of `config` that differ from config.yaml, except `RESUMABLE_CHANGES`."""
        saved = self.config.to_dict()
        new = config.to_dict()
        return {key: (saved.get(key), new[key]) for key in new
                if key not in RESUMABLE_CHANGES and saved.get(key) != new[key]}

    def check_resume(self, config) -> bool:
        """True when `config` resumes this run (saved checkpoints); False for a fresh directory.

        Raises:
            ValueError: config.yaml holds a different config (naming the file and the changed keys).
        """
        if not self.config_path.is_file():
            return False
        changed = self.config_changes(config)
        if changed:
            details = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
            raise ValueError(
                f"{self.config_path}: this run directory holds a run with a different config ({details}). "
                "Use a new --out, or the same settings to resume."
            )
        return self.checkpoints_path.is_dir()

    # history.csv

    def history(self):
        """history.csv as a DataFrame, or None when absent."""
        if not self.history_path.is_file():
            return None
        import pandas as pd

        return pd.read_csv(self.history_path)

    def best(self) -> Best:
        """The best epoch (1-based) and value of the monitored validation macro AUROC."""
        return best_of(self.history())

    def epochs_run(self) -> int:
        """Rows of history.csv (0 without one)."""
        history = self.history()
        return 0 if history is None else len(history)

    def check_not_longer(self, config) -> None:
        """Refuse `config` when this directory holds more trained epochs than ``config.epochs`` asks.

        The trained count is the larger of history.csv's rows and, for a complete run, its saved ``epochs``.

        Raises:
            ValueError: more epochs are trained there (names the directory); its best checkpoint may come from a
                later epoch, so a shorter run needs its own directory.
        """
        trained = self.epochs_run()
        if self.is_complete():
            trained = max(trained, int(self.config.epochs))
        if trained > int(config.epochs):
            raise ValueError(f"{self.path}: {trained} epochs are trained there, more than epochs={config.epochs}; "
                             "its best checkpoint may come from a later epoch, so a shorter run needs a new `out` "
                             "(or delete the directory)")

    def epochs_backed_up(self) -> int:
        """Epochs finished in the `BackupAndRestore` backup (checkpoints/training_metadata.json; 0 without one): where
        a resumed fit starts.

        Raises:
            ValueError: the metadata file is unreadable or has no integer `epoch` (names the file).
        """
        path = self.checkpoints_path / "training_metadata.json"
        if not path.is_file():
            return 0
        try:
            epoch = json.loads(path.read_text(encoding="utf-8"))["epoch"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: unreadable training metadata ({error})") from error
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"{path}: `epoch` must be a non-negative integer. Received: {epoch!r}")
        return epoch

    # test_predictions.csv

    def write_predictions(self, frame, probs):
        """Write test_predictions.csv: `frame`'s ids, paths and labels, and `probs` (N, 5) in TARGETS order."""
        import pandas as pd

        out = pd.DataFrame(
            {
                "image_id": frame["image_id"].to_numpy(),
                "patient_id": frame["patient_id"].astype(str).to_numpy(),
                "image_path": frame["image_path"].to_numpy(),
                "mask_path": frame["mask_path"].to_numpy(),
            }
        )
        for name in TARGETS:
            out[f"y_{name}"] = frame[name].astype(int).to_numpy()
        out[f"y_{NO_FINDING}"] = frame[NO_FINDING].astype(int).to_numpy()
        for k, name in enumerate(TARGETS):
            out[f"p_{name}"] = probs[:, k]
        out.to_csv(self.predictions_path, index=False, float_format="%.6g")
        return out

    def predictions(self):
        """test_predictions.csv, validated and sorted by image_id.

        Raises:
            FileNotFoundError: no test_predictions.csv.
            ValueError: naming the file and its missing columns, bad labels, probabilities or duplicated ids.
        """
        import pandas as pd

        path = self.predictions_path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; is {self.path} a finished `tfcxr.train` run?")
        df = pd.read_csv(path, dtype={"image_id": str, "patient_id": str})
        missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
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
        return df.sort_values("image_id", kind="mergesort").reset_index(drop=True)

    # efficiency.json

    def efficiency(self):
        """efficiency.json as a dict, or None when absent."""
        if not self.efficiency_path.is_file():
            return None
        with open(self.efficiency_path, encoding="utf-8") as handle:
            return json.load(handle)

    def write_efficiency(self, values: dict) -> None:
        """Write efficiency.json."""
        with open(self.efficiency_path, "w", encoding="utf-8") as handle:
            json.dump(values, handle, indent=2)
