"""The seeded held-out split of the real lung pairs: which pairs train, validate and test a lung segmenter.

It knows three pair sets (folders under one data root, each ``images/`` + ``masks/``):

- ``lungs_v7_covid``: V7 Labs' masks, which include the lung behind the heart; 80% train / 20% test;
- ``lungs_shenzhen_montgomery``: manual "classic" masks of the visible lung fields; 50/50 within each source
  (Shenzhen ``CHNCXR_*``, Montgomery ``MCUCXR_*``);
- ``shenzhen_lungs``: classic masks, all test.

``v7_train_max`` / ``v7_test_max`` take seeded subsets when CPU time is short; ``v7_val_max`` writes ``val_v7.csv``:
V7 training-side pairs that ``v7_train_max`` left out, for choosing settings without looking at the tests. Test sets:
``test_classic.csv`` and ``test_v7.csv``. Manifests are CSVs with ``image_path, mask_path, dataset`` columns.
"""

from __future__ import annotations

import csv
import logging
import pathlib

import numpy as np

from tfcxr.data.pairs import find_pairs

logger = logging.getLogger(__name__)

SEGMENTATION_SETS = ("lungs_v7_covid", "lungs_shenzhen_montgomery", "shenzhen_lungs")


def _write_manifest(path: pathlib.Path, pairs) -> None:
    from tfcxr.atomic import atomic_write

    with atomic_write(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_path", "mask_path", "dataset"])
        for pair, dataset in pairs:
            writer.writerow([str(pair.image_path), str(pair.mask_paths[0]), dataset])


def split_lung_sets(data_root, out_dir, seed: int = 0, v7_train_max: int = 0, v7_test_max: int = 0,
                    v7_val_max: int = 0) -> dict:
    """Write train.csv, test_classic.csv, test_v7.csv (and val_v7.csv) under `out_dir`.

    Returns:
        {"seed", "data_root", "counts": {split: {dataset: n}}, "stems": {split: {dataset: [stems]}}}.
    """
    root = pathlib.Path(data_root)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {"train": [], "test_classic": [], "test_v7": []}

    v7 = find_pairs(root / "lungs_v7_covid")
    order = rng.permutation(len(v7))
    n_test = round(0.2 * len(v7))
    test_idx, train_idx = order[:n_test], order[n_test:]
    if v7_test_max:
        test_idx = test_idx[:v7_test_max]
    if v7_train_max:
        train_idx, unused_idx = train_idx[:v7_train_max], train_idx[v7_train_max:]
        if v7_val_max:
            splits["val_v7"] = [(v7[i], "lungs_v7_covid") for i in sorted(unused_idx[:v7_val_max])]
    elif v7_val_max:
        raise ValueError("`--v7-val-max` draws from the V7 pairs that `--v7-train-max` leaves out; set both.")
    splits["test_v7"] += [(v7[i], "lungs_v7_covid") for i in sorted(test_idx)]
    splits["train"] += [(v7[i], "lungs_v7_covid") for i in sorted(train_idx)]

    sm = find_pairs(root / "lungs_shenzhen_montgomery")
    for prefix in ("CHNCXR", "MCUCXR"):
        group = [p for p in sm if p.stem.startswith(prefix)]
        order = rng.permutation(len(group))
        half = len(group) // 2
        splits["test_classic"] += [(group[i], "lungs_shenzhen_montgomery") for i in sorted(order[:half])]
        splits["train"] += [(group[i], "lungs_shenzhen_montgomery") for i in sorted(order[half:])]
    splits["test_classic"] += [(p, "shenzhen_lungs") for p in find_pairs(root / "shenzhen_lungs")]

    listing = {}
    for name, pairs in splits.items():
        _write_manifest(out / f"{name}.csv", pairs)
        listing[name] = {d: sorted(p.stem for p, ds in pairs if ds == d) for d in SEGMENTATION_SETS}
        listing[name] = {d: s for d, s in listing[name].items() if s}
    counts = {name: {d: len(s) for d, s in v.items()} for name, v in listing.items()}
    logger.info("Split counts: %s", counts)
    return {"seed": seed, "data_root": str(root), "counts": counts, "stems": listing}
