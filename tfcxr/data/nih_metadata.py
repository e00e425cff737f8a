"""NIH ChestX-ray14 on disk: finding and reading the metadata CSV, and indexing the image files.

    csv_path, image_root = find_metadata("/data/nih")          # folder or CSV path
    meta = load_metadata(csv_path)                              # normalised, validated columns
    images = find_images(image_root)                            # file name -> path

Owns the normalised metadata columns (`METADATA_COLUMNS`), the curated label columns
(`LABEL_COLUMNS`) and the parsing of `Finding Labels` into finding sets.
"""

import logging
import pathlib
import re

import pandas as pd

from tfcxr.labels import NO_FINDING, TARGETS, parse_finding_labels

logger = logging.getLogger(__name__)

METADATA_NAMES = (
    "Data_Entry_2017.csv",
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "labels.csv",
)
METADATA_COLUMNS = ("image_id", "finding_labels", "follow_up", "patient_id", "age", "sex", "view")
LABEL_COLUMNS = (*TARGETS, NO_FINDING)
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


def find_metadata(data):
    """Metadata CSV and image root for a folder or CSV path.

    A folder is searched for the names of `METADATA_NAMES`, first found wins.

    Returns:
        (csv_path, image_root) as `pathlib.Path`s.

    Raises:
        FileNotFoundError: no such path, or a folder without a metadata CSV.
    """
    path = pathlib.Path(data)
    if path.is_file():
        return path, path.parent
    if path.is_dir():
        for name in METADATA_NAMES:
            if (path / name).is_file():
                return path / name, path
        raise FileNotFoundError(
            f"{path}: no metadata CSV found; expected one of {', '.join(METADATA_NAMES)} in this folder."
        )
    raise FileNotFoundError(f"{path}: data not found (expected an NIH-layout folder, a metadata CSV or tfds:<name>).")


def load_metadata(csv_path):
    """Read NIH metadata into normalised columns.

    Reads `Data_Entry_2017.csv` (trailing empty column, split
    `OriginalImage[Width,Height]` header), `Data_Entry_2017_v2020.csv(.gz)`, the
    `labels.csv` of the nih_cxr14_384 sample, or a curated CSV written by
    `tfcxr.data.nih`. Extra columns are dropped; every `Finding Labels` value is validated.

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
    df = _normalise(_read_csv(csv_path), csv_path)
    _check_image_ids(df, csv_path)
    finding_sets(df, source=str(csv_path), first_line=2)  # line 1 is the header
    df.attrs["source"] = str(csv_path)
    logger.info("Read %d images of %d patients from %s", len(df), df["patient_id"].nunique(), csv_path)
    return df


def _read_csv(csv_path):
    """The CSV as strings, headers stripped; `FileNotFoundError` / `ValueError` naming the file."""
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: metadata CSV not found")
    try:
        # index_col=False: rows ending with a delimiter must not shift into the index.
        raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as err:
        raise ValueError(f"{csv_path}: cannot parse as CSV ({err})") from err
    raw.columns = [str(column).strip() for column in raw.columns]
    return raw


def _normalise(raw, csv_path):
    """The `METADATA_COLUMNS` of a raw CSV, typed and cleaned; `ValueError` when a column is missing."""
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
    return df


def _check_image_ids(df, csv_path):
    """`ValueError` for an empty image or patient id (naming the line) or duplicated image ids."""
    empty = df.index[df["image_id"].eq("") | df["patient_id"].eq("")]
    if len(empty):
        raise ValueError(f"{csv_path}, line {empty[0] + 2}: empty image id or patient id")
    duplicated = df["image_id"][df["image_id"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(
            f"{csv_path}: {len(duplicated)} duplicated image ids, e.g. {list(duplicated[:5])}"
        )


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
