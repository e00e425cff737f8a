"""Patient-level train/validation/test splits of curated NIH rows, and the leakage check.

    df["split"] = assign_splits(df, config, source)   # official lists when present, else seeded
    check_no_leakage(df)                               # no patient in two splits

Owns the split names (`SPLITS`) and the official list file names (`OFFICIAL_LISTS`).
"""

import logging
import pathlib

import numpy as np

from tfcxr.data.nih_metadata import LABEL_COLUMNS

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
OFFICIAL_LISTS = ("train_val_list.txt", "test_list.txt")


def assign_splits(df, config, source=None):
    """The split of each row: the official lists when both are found, else a seeded grouped split.

    Args:
        df: curated DataFrame with `image_id`, `patient_id` and the 0/1 `LABEL_COLUMNS`.
        config: `tfcxr.data.nih.CurationConfig` (fractions, seed, `official_lists_dir`).
        source: path of the metadata CSV, beside which the official lists are looked for
            when `config.official_lists_dir` is None.

    Returns:
        np.ndarray of names from `SPLITS`, aligned with `df` rows.

    Raises:
        ValueError: only one official list, images in both or neither list, or a
            `val_fraction` that leaves no training images.
        FileNotFoundError: `config.official_lists_dir` lacks the lists.
    """
    lists = _official_lists(config, source)
    if lists is not None:
        return _official_split(df, lists, config)
    train_fraction = 1.0 - config.val_fraction - config.test_fraction
    fractions = {"train": train_fraction, "validation": config.val_fraction, "test": config.test_fraction}
    return _grouped_split(df, fractions, config.seed)


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
