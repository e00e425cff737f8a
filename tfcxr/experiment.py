"""Run the paper's experiment grid (backbones x mask modes [x weights or variants] x seeds) and write one report.

    python -m tfcxr.experiment --config configs/paper.yaml [--out DIR] [--set epochs=2] [--only backbone=tiny]
        [--dry-run]

The YAML has these sections (an unknown key anywhere is an error naming it and the file):

    name: paper                      # report title
    out: runs/paper                  # cells go to OUT/<backbone>-<mask>, the report to OUT/report
    grid:                            # TrainConfig fields -> lists; the grid is their product
      backbone: [resnet50, efficientnetb0]
      mask: [original, tight, loose]
      weights: {random: none, ssl: "runs/pretrain_{backbone}_nih/backbone.weights.h5"}   # a mapping names its values
    seeds: [0, 1, 2]                 # optional: every cell once per seed, in OUT/<cell>-seed<k>
    train:                           # TrainConfig fields shared by every cell (tfcxr/config.py)
      data: ...
    evaluate:                        # options of tfcxr.evaluate (bootstrap, seed, ...)
      bootstrap: 1000

A grid axis is a list of values (the cell name shows each value, "/" as "_") or a mapping
label -> value (the cell name shows the label). A string value in `grid`, `train` or `--set` may name
the cell's fields in braces, as `{backbone}` above: each backbone then loads its own pretrained weights.
The axis `variant` maps labels to groups of TrainConfig fields that change together, e.g. a pretrained
init with its own fine-tuning recipe:

    grid:
      variant:
        random: {weights: none}
        ssl_lpft: {weights: runs/pretrain/backbone.weights.h5, freeze_backbone_epochs: 3}

Without `seeds` every cell trains once with `train.seed` (default 0) in OUT/<cell>; with `seeds`
the training seed comes only from that list (`seed` in `grid` or `train` is then an error).
`--only AXIS=LABEL[,LABEL]` trains a part of the grid (e.g. the small backbones here, `resnet50` on
a GPU host); the report covers every complete cell, whichever machine trained it.

Each run calls `tfcxr.train.train`. A run whose directory is complete
(`tfcxr.rundir.RunDir.is_complete`) with the same config is skipped, and an
interrupted run resumes from its checkpoints, so the command can be re-run until the grid is
done; each (cell, seed) resumes on its own. The report compares every complete run with
`tfcxr.evaluation.report.write_report`, which groups the seeds of a cell.
"""

import argparse
import dataclasses
import itertools
import logging
import pathlib
import string

import yaml

from tfcxr import cli
from tfcxr.rundir import RunDir

logger = logging.getLogger(__name__)

SECTIONS = ("name", "out", "grid", "seeds", "train", "evaluate")
VARIANT = "variant"  # the grid axis whose values are groups of TrainConfig fields
EVALUATE_OPTIONS = {
    "bootstrap": int,
    "seed": int,
    "ci_level": float,
    "specificity": float,
    "no_finding_score": str,
    "gradcam_images": int,
    "require_same_test_set": bool,
}


def _cell_name(pairs):
    """The run name of a grid cell from its (label, value) pairs, one per axis: the labels joined by '-'."""
    return "-".join(label for label, _ in pairs)


@dataclasses.dataclass
class Experiment:
    """A parsed experiment YAML.

    Attributes:
        name: title of the report.
        out: root folder of the cells and the report.
        grid: ordered dict TrainConfig field (or `variant`) -> list of (label, value) pairs; a variant's
            value is a dict of TrainConfig fields.
        train: TrainConfig fields shared by all cells.
        evaluate: keyword arguments of `write_report` (bootstrap -> num_resamples).
        source: the YAML path (for messages).
        seeds: training seeds of every cell, or None (one run per cell, seed from `train`).
    """

    name: str
    out: pathlib.Path
    grid: dict
    train: dict
    evaluate: dict
    source: str = "<dict>"
    seeds: list = None

    def __post_init__(self):
        names = [_cell_name(pairs) for pairs in itertools.product(*self.grid.values())]
        shared = sorted({name for name in names if names.count(name) > 1})
        if shared:
            raise ValueError(f"{self.source}: cells {shared} share one run directory (their labels join with "
                             "'-' to the same name); rename a label")

    def linked(self):
        """The config keys the `variant` axis sets, as one group (the report compares its cells as one setting)."""
        fields = {key for _, value in self.grid.get(VARIANT, ()) for key in value}
        return [sorted(fields)] if fields else []

    def cells(self, only=None):
        """List of (run name, TrainConfig overrides) in grid order, seeds innermost.

        Names are "<cell>" without `seeds` (e.g. "resnet50-tight") and "<cell>-seed<k>" with them. A string
        value in `grid` or `train` may name the cell's other fields in braces, e.g.
        `runs/pretrain_{backbone}/backbone.weights.h5`; the names are filled from the cell's values as given,
        so a value that itself holds braces cannot be named.

        Args:
            only: optional dict axis -> set of labels (`parse_only`); cells with another label on an axis
                are left out.

        Raises:
            ValueError: a braced name is not one of the cell's fields, names a field whose value has braces
                too, or is not a bare field name (`{a.b}`, `{a[0]}`, `{}`, `{a!r}`).
        """
        keys = list(self.grid)
        cells = []
        for pairs in itertools.product(*(self.grid[k] for k in keys)):
            if only and any(label not in only.get(key, {label}) for key, (label, _) in zip(keys, pairs)):
                continue
            cell = _cell_name(pairs)
            fields = dict(self.train)
            for key, (_, value) in zip(keys, pairs):
                fields.update(value if key == VARIANT else {key: value})
            overrides = {key: self._fill(cell, key, value, fields) for key, value in fields.items()}
            for seed in self.seeds if self.seeds is not None else (None,):
                name = cell if seed is None else f"{cell}-seed{seed}"
                run = dict(overrides, out=str(self.out / name))
                if seed is not None:
                    run["seed"] = seed
                cells.append((name, run))
        return cells

    def _fill(self, cell, key, value, fields):
        """`value` with its `{field}` names filled from the cell's `fields` (a value without braces unchanged)."""
        if not isinstance(value, str) or "{" not in value:
            return value

        def fail(problem):
            raise ValueError(f"{self.source}: cell {cell!r}: `{key}: {value}`: {problem}; the cell's fields: "
                             f"{', '.join(sorted(fields))}")

        try:
            names = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(value)
                     if name is not None]
        except ValueError as err:
            fail(f"malformed braces ({err})")
        for name, spec, conversion in names:
            if not name.isidentifier() or spec or conversion:
                fail(f"{{{name}}} is not a bare field name (write `{{field}}`; `{{{{` for a literal brace)")
            if name not in fields:
                fail(f"{{{name}}} is not one of the cell's fields")
            if isinstance(fields[name], str) and "{" in fields[name]:
                fail(f"{{{name}}} names a value that has braces itself ({fields[name]!r})")
        return value.format_map(fields)


def parse_only(experiment, items):
    """`--only` filters -> dict axis -> set of labels.

    Args:
        experiment: `Experiment`.
        items: strings "axis=label[,label...]", e.g. "backbone=tiny,efficientnetb0". Items on one axis
            add up (union); items on different axes must all hold (intersection).

    Returns:
        dict axis -> set of labels; {} when `items` is empty (every cell).

    Raises:
        ValueError: malformed item, an axis that is not in the grid, or a label the axis does not have.
    """
    only = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not text.strip():
            raise ValueError(f"`--only` must look like axis=label[,label...]. Received: {item!r}")
        if key not in experiment.grid:
            hint = " (seeds are not an axis: every chosen cell trains all of `seeds`)" if key in ("seed", "seeds") else ""
            raise ValueError(f"{experiment.source}: `--only {item}`: {key!r} is not a grid axis; axes: "
                             f"{', '.join(experiment.grid)}{hint}")
        labels = {label.strip() for label in text.split(",")}
        if "" in labels:
            raise ValueError(f"{experiment.source}: `--only {item}`: an empty label; write axis=label[,label...]")
        known = [label for label, _ in experiment.grid[key]]
        unknown = sorted(labels - set(known))
        if unknown:
            raise ValueError(f"{experiment.source}: `--only {item}`: unknown {key} label(s) {unknown}; known: "
                             f"{', '.join(known)}")
        only[key] = only.get(key, set()) | labels
    return only


def parse_experiment(values, source="<dict>", out=None, sets=()):
    """Validate an experiment mapping.

    Args:
        values: the YAML mapping.
        source: its file name, echoed in errors.
        out: optional override of `out`.
        sets: "key=value" strings overriding `train` fields (values parsed as YAML).

    Returns:
        `Experiment`.

    Raises:
        ValueError: unknown section/field/option, empty grid axis, or a field both in grid and train.
    """
    from tfcxr.config import FIELDS

    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping with keys {SECTIONS}, got {type(values).__name__}")
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}. Known keys: {', '.join(SECTIONS)}")
    grid = values.get("grid") or {}
    train = dict(values.get("train") or {})
    evaluate = dict(values.get("evaluate") or {})
    for section, mapping in (("grid", grid), ("train", train), ("evaluate", evaluate)):
        if not isinstance(mapping, dict):
            raise ValueError(f"{source}: `{section}` must be a mapping. Received: {mapping!r}")
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"`--set` must look like key=value. Received: {item!r}")
        train[key.strip()] = yaml.safe_load(text)
    for section, mapping in (("grid", {k: v for k, v in grid.items() if k != VARIANT}), ("train", train)):
        bad = _bad_fields(mapping, FIELDS)
        if bad:
            raise ValueError(
                f"{source}: unknown or reserved `{section}` key(s) {bad}. Known TrainConfig fields: "
                f"{', '.join(f for f in FIELDS if f != 'out')} (the run directory comes from the top-level `out`)"
            )
    if not grid:
        raise ValueError(f"{source}: `grid` is empty; give at least one field, e.g. grid: {{mask: [original, tight]}}")
    if VARIANT in grid and not isinstance(grid[VARIANT], dict):
        raise ValueError(f"{source}: grid `variant` must be a mapping label -> {{field: value, ...}}. "
                         f"Received: variant={grid[VARIANT]!r}")
    grid = {key: _axis(source, key, axis) for key, axis in grid.items()}
    varied = set(grid) - {VARIANT}
    if VARIANT in grid:
        varied |= _variant_fields(source, grid[VARIANT], FIELDS, set(grid))
    both = sorted(varied & set(train))
    if both:
        raise ValueError(f"{source}: key(s) {both} are both in `grid` and `train`; keep each in one place")
    seeds = _seeds(source, values.get("seeds"), varied, train)
    bad = sorted(set(evaluate) - set(EVALUATE_OPTIONS))
    if bad:
        raise ValueError(f"{source}: unknown `evaluate` key(s) {bad}. Known: {', '.join(EVALUATE_OPTIONS)}")
    evaluate = {k: EVALUATE_OPTIONS[k](v) if k != "no_finding_score" else v for k, v in evaluate.items()}
    if "bootstrap" in evaluate:
        evaluate["num_resamples"] = evaluate.pop("bootstrap")
    root = pathlib.Path(out or values.get("out") or f"runs/{pathlib.Path(source).stem}")
    return Experiment(name=str(values.get("name") or pathlib.Path(source).stem), out=root, grid=grid,
                      train=train, evaluate=evaluate, source=str(source), seeds=seeds)


def _axis(source, key, axis):
    """A grid axis as [(label, value), ...]: a list labels each value by itself, a mapping by its key."""
    if isinstance(axis, dict) and axis:
        pairs = [(str(label), value) for label, value in axis.items()]
    elif isinstance(axis, list) and axis:
        pairs = [(str(value).replace("/", "_"), value) for value in axis]
    else:
        raise ValueError(f"{source}: grid `{key}` must be a non-empty list or a mapping label -> value. "
                         f"Received: {key}={axis!r}")
    labels = [label for label, _ in pairs]
    bad = sorted({label for label in labels if labels.count(label) > 1 or not label or "/" in label or "," in label})
    if bad:
        raise ValueError(f"{source}: grid `{key}` labels must be unique, non-empty and without '/' or ',' "
                         f"(`--only` lists labels with commas). Received: {bad}")
    return pairs


def _bad_fields(mapping, fields):
    """Sorted keys of `mapping` that are not TrainConfig `fields`, or are `out` (set by the experiment)."""
    return sorted(set(mapping) - set(fields) | ({"out"} & set(mapping)))


def _variant_fields(source, pairs, fields, axes):
    """The TrainConfig fields the `variant` axis sets; raise ValueError for a malformed variant."""
    varied = set()
    for label, value in pairs:
        if not isinstance(value, dict) or not value:
            raise ValueError(f"{source}: grid `variant` {label!r} must be a non-empty mapping of TrainConfig fields. "
                             f"Received: {value!r}")
        bad = _bad_fields(value, fields)
        if bad:
            raise ValueError(f"{source}: grid `variant` {label!r} has unknown or reserved key(s) {bad}")
        clash = sorted(set(value) & axes)
        if clash:
            raise ValueError(f"{source}: grid `variant` {label!r} sets {clash}, which are grid axes too")
        varied |= set(value)
    return varied


def _seeds(source, seeds, grid, train):
    """The validated `seeds` list, or None when the YAML has none."""
    if seeds is None:
        return None
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                            for s in seeds):
        raise ValueError(f"{source}: `seeds` must be a non-empty list of integers. Received: seeds={seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{source}: `seeds` has duplicates. Received: seeds={seeds!r}")
    if "seed" in grid or "seed" in train:
        raise ValueError(f"{source}: `seed` is set in `{'grid' if 'seed' in grid else 'train'}` and `seeds` is given; "
                         "keep the training seeds in `seeds` only")
    return list(seeds)


def load_experiment(path, out=None, sets=()):
    """Read and validate an experiment YAML (see `parse_experiment`)."""
    from tfcxr.config import read_yaml_mapping

    return parse_experiment(read_yaml_mapping(path), str(path), out, sets)


def _resolve(experiment, name, overrides):
    """The cell's `TrainConfig`; a ValueError names the experiment file and the cell."""
    from tfcxr.config import resolve_config

    try:
        return resolve_config(None, overrides)
    except ValueError as err:
        raise ValueError(f"{experiment.source}: cell {name!r}: {err}") from None


def cell_state(config):
    """"complete", "partial" (resumable) or "new" for the run directory of `config`.

    A complete run trained for fewer epochs than `config` asks is "partial": `tfcxr.train` resumes it from its
    last epoch up to the new count, as it would by hand.

    Raises:
        ValueError: a complete run directory holds a different config (names the keys), or more epochs than
            `config` asks (a finished run cannot be cut short).
    """
    run = RunDir(config.out)
    if not run.is_complete():
        return "partial" if run.config_path.is_file() else "new"
    changed = run.config_changes(config)
    if changed:
        raise ValueError(
            f"{run.config_path}: complete run with a different config "
            f"({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changed.items())}); "
            f"delete {run.path} or choose another --out"
        )
    run.check_not_longer(config)
    return "partial" if int(config.epochs) > int(run.config.epochs) else "complete"


def run_cell(config):
    """Train one cell with `tfcxr.train.train`; returns its result dict."""
    import keras

    from tfcxr.train import train

    try:
        return train(config)
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()


def run_experiment(experiment, dry_run=False, only=None):
    """Train the missing cells, then write the report.

    Args:
        experiment: `Experiment`.
        dry_run: list the cells and their state only.
        only: optional `parse_only` filter: train only these cells. The report still covers every complete
            run of the grid, so a grid split over machines (e.g. `--only backbone=resnet50` on a GPU host)
            reports as one.

    Returns:
        dict {"cells": {name: state or status}, "report": path or None, "failed": [names]}.
    """
    cells = [(name, _resolve(experiment, name, overrides)) for name, overrides in experiment.cells()]
    chosen = {name for name, _ in experiment.cells(only)} if only else {name for name, _ in cells}
    states = {name: cell_state(config) for name, config in cells}
    for name, config in cells:
        skipped = "" if name in chosen or states[name] == "complete" else " (not in --only)"
        logger.info("cell %-28s %-8s %s%s", name, states[name], config.out, skipped)
    if dry_run:
        return {"cells": states, "report": None, "failed": []}
    failed = []
    for index, (name, config) in enumerate(cells, 1):
        if states[name] == "complete":
            logger.info("[%d/%d] %s: complete, skipped", index, len(cells), name)
            continue
        if name not in chosen:
            logger.info("[%d/%d] %s: not in --only, skipped", index, len(cells), name)
            continue
        logger.info("[%d/%d] %s: training (%s)", index, len(cells), name, states[name])
        try:
            result = run_cell(config)
        except (ValueError, FileNotFoundError) as err:
            logger.error("cell %s failed: %s", name, err)
            failed.append(name)
            states[name] = "failed"
            continue
        states[name] = result["status"]
        if result["status"] != "ok":
            failed.append(name)
    from tfcxr.evaluation.report import write_report
    from tfcxr.evaluation.runs import load_runs

    done = [pathlib.Path(config.out) for _, config in cells if RunDir(config.out).is_complete()]
    report = None
    if done:
        report = experiment.out / "report"
        result = write_report(load_runs(done), report, title=f"{experiment.name} ({len(done)} of {len(cells)} cells complete)",
                              linked=experiment.linked(), **experiment.evaluate)
        from tfcxr.evaluate import summary_table

        print(summary_table(result))
        print(f"Report: {report / 'report.md'}")
    return {"cells": states, "report": report, "failed": failed}


def build_parser():
    """The command-line parser of `python -m tfcxr.experiment`."""
    parser = argparse.ArgumentParser(prog="python -m tfcxr.experiment", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="experiment YAML, e.g. configs/paper.yaml")
    parser.add_argument("--out", help="root folder of the cells and the report (overrides `out`)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a shared `train` field, e.g. --set epochs=2 (repeatable)")
    parser.add_argument("--only", action="append", default=[], metavar="AXIS=LABEL[,LABEL]",
                        help="train only the cells with these labels, e.g. --only backbone=tiny,efficientnetb0 "
                             "(repeatable; the report still covers every complete cell)")
    parser.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=False,
                        help="list the cells and their state without training")
    return cli.add_log_level(parser)


def main(argv=None) -> int:
    """Run the CLI; returns the exit status (0 done, 1 a cell failed, 2 bad input)."""
    args = build_parser().parse_args(argv)
    return cli.run(_main, args, logger)


def _main(args) -> int:
    experiment = load_experiment(args.config, args.out, args.set)
    outcome = run_experiment(experiment, dry_run=args.dry_run, only=parse_only(experiment, args.only))
    if outcome["failed"]:
        logger.error("failed cells: %s", ", ".join(outcome["failed"]))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
