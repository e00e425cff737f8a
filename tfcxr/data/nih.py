"""NIH ChestX-ray14 metadata, curation into the five-target subset and patient-level splits.

    meta = load_metadata("Data_Entry_2017_v2020.csv.gz")   # normalised columns
    df = curate(meta, CurationConfig(views=None))            # + 0/1 label columns + "split"

CLI:
    python -m tfcxr.data.nih summary --metadata FILE [--out DIR] [--views PA AP]
        [--include-other-findings | --no-include-other-findings] [--seed 42]
"""

import argparse
import dataclasses
import logging
import pathlib
import re

import numpy as np
import pandas as pd

from tfcxr import cli
from tfcxr.labels import NO_FINDING, TARGETS, parse_finding_labels

logger = logging.getLogger(__name__)

NIH_VIEWS = ("PA", "AP")
SPLITS = ("train", "validation", "test")
OFFICIAL_LISTS = ("train_val_list.txt", "test_list.txt")
METADATA_COLUMNS = ("image_id", "finding_labels", "follow_up", "patient_id", "age", "sex", "view")
LABEL_COLUMNS = (*TARGETS, NO_FINDING)
SUMMARY_COLUMNS = ("split", "images", "patients", *LABEL_COLUMNS)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# Normalised name -> accepted source headers (NIH's, then our own, so curated CSVs read back).
_SOURCE_COLUMNS = {
    "image_id": ("Image Index", "image_id"),
    "finding_labels": ("Finding Labels", "finding_labels"),
    "follow_up": ("Follow-up #", "follow_up"),
    "patient_id": ("Patient ID", "patient_id"),
    "age": ("Patient Age", "age"),
    "sex": ("Patient Gender", "sex"),
    "view": ("View Position", "view"),
}
# NIH ages are plain years in the current files and "058Y"-style strings in early releases.
_AGE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([YMD]?)\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"": 1.0, "Y": 1.0, "M": 1.0 / 12.0, "D": 1.0 / 365.0}


def _parse_age(text):
    match = _AGE_PATTERN.match(str(text))
    if not match:
        return float("nan")
    return float(match.group(1)) * _AGE_UNIT_YEARS[match.group(2).upper()]


def _normalise_patient_id(text):
    text = str(text).strip()
    return str(int(text)) if text.isdigit() else text


def finding_sets(df, source="metadata", first_line=None):
    """Parse the `finding_labels` column into one `frozenset` of findings per row.

    Args:
        df: DataFrame with `finding_labels` and `image_id` columns.
        source: file name echoed in errors.
        first_line: CSV line number of the first row (errors then name the
            line); None names the DataFrame index label instead.

    Returns:
        list of frozensets (empty for "No Finding"), aligned with `df` rows.

    Raises:
        ValueError: naming `source`, the line or row and the image of the first bad value.
    """
    parsed = {}
    for position, (label, text, image_id) in enumerate(zip(df.index, df["finding_labels"], df["image_id"])):
        if text not in parsed:
            where = f"line {first_line + position}" if first_line is not None else f"row {label}"
            parsed[text] = parse_finding_labels(text, source=f"{source}, {where} (image {image_id})")
    return [parsed[text] for text in df["finding_labels"]]


def load_metadata(csv_path):
    """Read NIH metadata into normalised columns.

    Reads `Data_Entry_2017.csv` (trailing empty column, split
    `OriginalImage[Width,Height]` header), `Data_Entry_2017_v2020.csv(.gz)`, the
    `labels.csv` of the nih_cxr14_384 sample, or a curated CSV written by this
    module. Extra columns are dropped; every `Finding Labels` value is validated.

    Args:
        csv_path: path of the CSV (optionally compressed, e.g. `.csv.gz`).

    Returns:
        DataFrame, one row per image, columns `METADATA_COLUMNS`:
        image_id (str, e.g. "00000001_000.png"), finding_labels (str),
        follow_up (int, -1 if absent), patient_id (str, no leading zeros),
        age (float years, NaN if unparseable), sex ("M"/"F"), view ("PA"/"AP").
        `df.attrs["source"]` holds the path.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable CSV, missing columns, duplicate images or an
            unknown finding (naming the file and line).
    """
    csv_path = pathlib.Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: metadata CSV not found")
    try:
        # index_col=False: rows ending with a delimiter must not shift into the index.
        raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as err:
        raise ValueError(f"{csv_path}: cannot parse as CSV ({err})") from err
    raw.columns = [str(column).strip() for column in raw.columns]
    found, missing = {}, []
    for name, candidates in _SOURCE_COLUMNS.items():
        match = next((c for c in candidates if c in raw.columns), None)
        if match is None:
            missing.append(candidates[0])
        else:
            found[name] = match
    if missing:
        raise ValueError(
            f"{csv_path}: unknown column layout, missing columns {missing}. "
            f"Found columns: {list(raw.columns)}"
        )
    df = pd.DataFrame({name: raw[column].astype(str).str.strip() for name, column in found.items()})
    df["follow_up"] = pd.to_numeric(df["follow_up"], errors="coerce").fillna(-1).astype(int)
    df["patient_id"] = df["patient_id"].map(_normalise_patient_id)
    df["age"] = df["age"].map(_parse_age).astype(float)
    df["sex"] = df["sex"].str.upper()
    df["view"] = df["view"].str.upper()
    empty = df.index[df["image_id"].eq("") | df["patient_id"].eq("")]
    if len(empty):
        raise ValueError(f"{csv_path}, line {empty[0] + 2}: empty image id or patient id")
    duplicated = df["image_id"][df["image_id"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(
            f"{csv_path}: {len(duplicated)} duplicated image ids, e.g. {list(duplicated[:5])}"
        )
    finding_sets(df, source=str(csv_path), first_line=2)  # line 1 is the header
    df.attrs["source"] = str(csv_path)
    logger.info("Read %d images of %d patients from %s", len(df), df["patient_id"].nunique(), csv_path)
    return df


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


def _grouped_split(df, fractions, seed):
    """Assign whole patients to splits, approximately stratified by label.

    Greedy: patients in seeded random order, largest first; each goes to the
    split with the largest relative shortfall, averaged over the label columns
    the patient has and the image count. Deterministic for a given seed.

    Args:
        df: DataFrame with `patient_id` and the 0/1 `LABEL_COLUMNS`.
        fractions: dict split name -> target share of images (sums to 1).
        seed: int.

    Returns:
        np.ndarray of split names aligned with `df` rows.
    """
    names = list(fractions)
    shares = np.array([fractions[name] for name in names], float)  # (S,)
    grouped = df.groupby("patient_id", sort=True)
    per_patient = grouped[list(LABEL_COLUMNS)].sum()
    per_patient["images"] = grouped.size()
    counts = per_patient.to_numpy(float)  # (P, D)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(counts))
    order = order[np.argsort(-counts[order, -1], kind="stable")]  # large patients first
    desired = np.maximum(shares[:, None] * counts.sum(0)[None, :], 1e-9)  # (S, D)
    current = np.zeros_like(desired)
    chosen = np.empty(len(counts), int)
    for patient in order:
        present = counts[patient] > 0
        shortfall = (desired[:, present] - current[:, present]) / desired[:, present]  # (S, d)
        best = int(np.argmax(shortfall.mean(axis=1)))
        chosen[patient] = best
        current[best] += counts[patient]
    split_of_patient = dict(zip(per_patient.index, np.array(names)[chosen]))
    return df["patient_id"].map(split_of_patient).to_numpy()


def _read_list(path):
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _official_lists(config, source):
    """Return (train_val_path, test_path) when both official lists exist, else None."""
    if config.official_lists_dir is not None:
        folder = pathlib.Path(config.official_lists_dir)
    elif source is not None:
        folder = pathlib.Path(source).parent
    else:
        return None
    paths = [folder / name for name in OFFICIAL_LISTS]
    present = [path.is_file() for path in paths]
    if all(present):
        return tuple(paths)
    if any(present):
        raise ValueError(
            f"{folder}: found only one of the official split lists {OFFICIAL_LISTS}; "
            "provide both, or neither for a seeded patient-level split"
        )
    if config.official_lists_dir is not None:
        raise FileNotFoundError(f"{folder}: official split lists {OFFICIAL_LISTS} not found")
    return None


def _official_split(df, lists, config):
    """Test = test_list.txt; validation carved from train_val_list.txt by patient."""
    train_val_path, test_path = lists
    train_val, test = _read_list(train_val_path), _read_list(test_path)
    in_test = df["image_id"].isin(test).to_numpy()
    in_train_val = df["image_id"].isin(train_val).to_numpy()
    for mask, problem in ((in_test & in_train_val, "in both"), (~in_test & ~in_train_val, "in neither of")):
        if mask.any():
            examples = df["image_id"][mask].tolist()[:5]
            raise ValueError(
                f"{mask.sum()} curated images are {problem} {train_val_path} and {test_path}, e.g. {examples}"
            )
    split = np.full(len(df), "test", dtype=object)
    val_share = config.val_fraction / in_train_val.mean() if in_train_val.any() else 1.0
    if val_share >= 1.0:
        raise ValueError(
            f"`val_fraction`={config.val_fraction} leaves no training images beside {train_val_path}"
        )
    split[in_train_val] = _grouped_split(
        df[in_train_val], {"train": 1.0 - val_share, "validation": val_share}, config.seed
    )
    logger.info("Official split lists: %s, %s", train_val_path, test_path)
    return split


def check_no_leakage(df):
    """Raise ValueError when a patient has images in more than one split.

    Args:
        df: DataFrame with `patient_id` and `split` columns.
    """
    splits_per_patient = df.groupby("patient_id")["split"].unique()
    leaked = splits_per_patient[splits_per_patient.map(len) > 1]
    if len(leaked):
        listing = ", ".join(f"{patient}: {sorted(splits)}" for patient, splits in leaked.head(20).items())
        raise ValueError(f"Patient leakage: {len(leaked)} patients are in more than one split ({listing})")


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

    lists = _official_lists(config, source)
    if lists is not None:
        df["split"] = _official_split(df, lists, config)
    else:
        train_fraction = 1.0 - config.val_fraction - config.test_fraction
        fractions = {"train": train_fraction, "validation": config.val_fraction, "test": config.test_fraction}
        df["split"] = _grouped_split(df, fractions, config.seed)
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


def find_images(root):
    """Index NIH image files below `root`.

    Looks in `root/images/` and `root/images_*/images/` (the layout of NIH's
    and Kaggle's archives) and in `root` itself.

    Returns:
        dict image file name (e.g. "00000001_000.png") -> pathlib.Path.
    """
    root = pathlib.Path(root)
    folders = [root, root / "images", *sorted(root.glob("images_*/images"))]
    index = {}
    for folder in folders:
        if folder.is_dir():
            for path in folder.iterdir():
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    index.setdefault(path.name, path)
    return index


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tfcxr.data.nih", description=__doc__.split("\n")[0])
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
