"""Curation of NIH ChestX-ray14 metadata into the five-target subset, its per-split summary and the CLI.

    meta = load_metadata("Data_Entry_2017_v2020.csv.gz")   # tfcxr.data.nih_metadata
    df = curate(meta, CurationConfig(views=None))            # + 0/1 label columns + "split"
    print(to_markdown(summarize(df)))

Owns the curation policy (`CurationConfig`, `curate`); the metadata reading lives in
`tfcxr.data.nih_metadata`, the patient-level splits and the leakage check in `tfcxr.data.nih_splits`.

CLI:
    python -m tfcxr.data.nih summary --metadata FILE [--out DIR] [--views PA AP]
        [--include-other-findings | --no-include-other-findings] [--seed 42]
"""

import argparse
import dataclasses
import logging
import pathlib

import numpy as np
import pandas as pd

from tfcxr import cli
from tfcxr.data.nih_metadata import LABEL_COLUMNS, METADATA_COLUMNS, finding_sets, load_metadata
from tfcxr.data.nih_splits import SPLITS, assign_splits, check_no_leakage
from tfcxr.labels import NO_FINDING, TARGETS

logger = logging.getLogger(__name__)

NIH_VIEWS = ("PA", "AP")
SUMMARY_COLUMNS = ("split", "images", "patients", *LABEL_COLUMNS)


@dataclasses.dataclass
class CurationConfig:
    """How to curate NIH metadata into the classification subset (the rules are in `curate`).

    Attributes:
        views: tuple of views to keep, from `NIH_VIEWS`; None keeps every view present.
        include_other_findings: also keep images whose findings are all
            non-targets (as negatives for every target; `No Finding` = 0).
        val_fraction: share of the curated images for validation.
        test_fraction: share for test (seeded split only; with official lists
            the test split is `test_list.txt`).
        seed: seed of the grouped split.
        official_lists_dir: folder with `train_val_list.txt` and `test_list.txt`;
            None looks beside the metadata CSV. Used only when both files exist.
    """

    views: tuple = ("PA", "AP")
    include_other_findings: bool = False
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 42
    official_lists_dir: str = None

    def __post_init__(self):
        if self.views is not None:
            if isinstance(self.views, str):
                self.views = (self.views,)
            self.views = tuple(str(view).upper() for view in self.views)
            bad = [view for view in self.views if view not in NIH_VIEWS]
            if not self.views or bad:
                raise ValueError(
                    f"`views` must be None or a non-empty tuple from {NIH_VIEWS}. Received: views={self.views}"
                )
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"`{name}` must be in (0, 1). Received: {name}={value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                "`val_fraction + test_fraction` must be below 1. Received: "
                f"val_fraction={self.val_fraction}, test_fraction={self.test_fraction}"
            )


def curate(meta_df, config=None):
    """Select the classification subset and assign patient-level splits.

    Keeps the rows of `config.views` whose labels are `No Finding` or hold at
    least one target (plus other-findings-only rows if
    `config.include_other_findings`). Splits follow the official lists when
    present, else a seeded grouped split on `patient_id`. Runs the leakage check.

    Args:
        meta_df: output of `load_metadata`.
        config: `CurationConfig` (default: `CurationConfig()`).

    Returns:
        DataFrame (new index): `METADATA_COLUMNS`, then one int 0/1 column per
        name in `TARGETS`, `"No Finding"` (0/1), and `split` in `SPLITS`.

    Raises:
        ValueError: missing columns, nothing left after curation, an empty
            split, or patient leakage.
    """
    config = config or CurationConfig()
    source = meta_df.attrs.get("source")
    name = source or "metadata"
    missing = [column for column in METADATA_COLUMNS if column not in meta_df.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}; read it with load_metadata()")
    findings = finding_sets(meta_df, source=name)
    df = meta_df.loc[:, list(METADATA_COLUMNS)].reset_index(drop=True)
    if config.views is not None:
        keep_view = df["view"].isin(config.views).to_numpy()
        df = df[keep_view].reset_index(drop=True)
        findings = [f for f, keep in zip(findings, keep_view) if keep]
    for target in TARGETS:
        df[target] = np.array([target in f for f in findings], dtype=int)
    df[NO_FINDING] = np.array([not f for f in findings], dtype=int)
    if not config.include_other_findings:
        df = df[df[list(LABEL_COLUMNS)].any(axis=1)].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"{name}: no image left after curation with {config}")

    df["split"] = assign_splits(df, config, source)
    sizes = df["split"].value_counts()
    empty = [split for split in SPLITS if sizes.get(split, 0) == 0]
    if empty:
        raise ValueError(
            f"{name}: split(s) {empty} are empty after curation ({len(df)} images of "
            f"{df['patient_id'].nunique()} patients); use more data or other fractions ({config})"
        )
    check_no_leakage(df)
    return df


def summarize(df):
    """Per-split counts of a curated DataFrame.

    Returns:
        DataFrame with columns `SUMMARY_COLUMNS` (split, images, patients, one
        positive count per label column), one row per split plus a row "all".
    """
    rows = []
    for split, part in [*((s, df[df["split"] == s]) for s in SPLITS), ("all", df)]:
        counts = {column: int(part[column].sum()) for column in LABEL_COLUMNS}
        rows.append({"split": split, "images": len(part), "patients": part["patient_id"].nunique(), **counts})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def to_markdown(table):
    """Render a small DataFrame as a GitHub markdown table."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def build_parser():
    """The command-line parser of `python -m tfcxr.data.nih`."""
    parser = argparse.ArgumentParser(
        prog="python -m tfcxr.data.nih",
        description="NIH ChestX-ray14 metadata, curation into the five-target subset and patient-level splits.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="curate, split and print per-split counts")
    summary.add_argument("--metadata", required=True, type=pathlib.Path, help="Data_Entry_2017*.csv(.gz) or labels.csv")
    summary.add_argument("--out", type=pathlib.Path, help="write OUT/summary.csv and OUT/curated.csv")
    summary.add_argument("--views", nargs="+", choices=NIH_VIEWS, help="views to keep (default: all)")
    summary.add_argument(
        "--include-other-findings",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep images whose findings are all non-targets, as negatives",
    )
    summary.add_argument("--val-fraction", type=float, default=CurationConfig.val_fraction)
    summary.add_argument("--test-fraction", type=float, default=CurationConfig.test_fraction)
    summary.add_argument("--seed", type=int, default=CurationConfig.seed)
    summary.add_argument("--official-lists-dir", type=pathlib.Path, help="folder with train_val_list.txt, test_list.txt")
    cli.add_log_level(summary)
    return parser


def main(argv=None):
    """Run `python -m tfcxr.data.nih` with `argv` (default: sys.argv); returns the exit status."""
    args = build_parser().parse_args(argv)
    return cli.run(_main, args, logger)


def _main(args) -> int:
    config = CurationConfig(
        views=tuple(args.views) if args.views else None,
        include_other_findings=args.include_other_findings,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        official_lists_dir=args.official_lists_dir,
    )
    curated = curate(load_metadata(args.metadata), config)
    table = summarize(curated)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "summary.csv", index=False)
        curated.to_csv(args.out / "curated.csv", index=False)
        logger.info("Wrote %s and %s", args.out / "summary.csv", args.out / "curated.csv")
    print(to_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
