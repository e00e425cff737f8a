"""The images a pretraining run uses: every X-ray below the image folders, less the excluded ones.

Images: every PNG/JPEG below the `images` folders (recursive). An image is left out when
its file stem or its patient is listed in `exclude_list`, or its patient falls in one of
`exclude_splits` of the split defined by `exclude_split_of` (a `tfcxr.train` or
`tfcxr.experiment` YAML), so pretraining never sees test-split patients. The patient of an
image comes from the `metadata` CSVs (`Image Index`, `Patient ID`) or from NIH's file
name convention `<8-digit patient>_<3-digit follow-up>`. With a mask mode other than
`original` each image needs its lung mask `masks/<stem>.png`.

The settings come from a `tfcxr.pretrain.PretrainConfig`; `select_images` is the entry point.
"""

import logging
import pathlib
import re

from tfcxr.config import read_yaml_mapping

logger = logging.getLogger("tfcxr.pretrain")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_NIH_STEM = re.compile(r"^(\d{8})_\d{3}$")


def normalise_patient_id(text):
    """Patient ids as NIH metadata holds them: "00000013" and "13" are both "13"."""
    text = str(text).strip()
    return str(int(text)) if text.isdigit() else text


def find_image_files(folders):
    """Every PNG/JPEG file below `folders` (recursive, sorted, first of duplicate paths kept).

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: no image was found in a folder.
    """
    paths = []
    for folder in folders:
        folder = pathlib.Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: image folder not found")
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            raise ValueError(f"{folder}: no PNG/JPEG images found (searched recursively)")
        logger.info("%s: %d images", folder, len(found))
        paths += found
    return list(dict.fromkeys(paths))


def read_patient_map(csv_paths):
    """dict image stem -> patient id from metadata CSVs with `Image Index` and `Patient ID` columns."""
    import pandas as pd

    mapping = {}
    for path in csv_paths:
        if not pathlib.Path(path).is_file():
            raise FileNotFoundError(f"{path}: metadata CSV not found")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in ("Image Index", "Patient ID") if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        for image, patient in zip(frame["Image Index"], frame["Patient ID"]):
            mapping[pathlib.Path(image).stem] = normalise_patient_id(patient)
    return mapping


def patient_of(stem, patient_map):
    """Patient id of an image: from `patient_map`, else NIH's `<patient>_<follow-up>` file name, else None."""
    if stem in patient_map:
        return patient_map[stem]
    match = _NIH_STEM.match(stem)
    return normalise_patient_id(match.group(1)) if match else None


def read_exclude_list(path):
    """Set of stripped lines (image stems or patient ids) of `path`, without blanks and # comments."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: exclude list not found")
    entries = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.add(pathlib.Path(line).stem if line.lower().endswith(IMAGE_SUFFIXES) else line)
    return entries


def split_patients(config_path, splits=("test",)):
    """Patients in `splits` of the patient-level split of a `tfcxr.train` or `tfcxr.experiment` YAML.

    The split is the one `tfcxr.train` builds (`tfcxr.data.records.load_records`), for every
    distinct data source and curation among an experiment's cells.

    Returns:
        set of normalised patient ids.
    """
    from tfcxr.config import resolve_config
    from tfcxr.data.pipeline import PipelineConfig
    from tfcxr.data.records import load_records
    from tfcxr.train import resolve_data

    values = read_yaml_mapping(config_path)
    if "grid" in values:
        from tfcxr.experiment import _resolve, parse_experiment

        experiment = parse_experiment(values, str(config_path))
        # The split does not depend on masking: resolve every cell as `original` (no mask files needed).
        configs = [_resolve(experiment, name, dict(overrides, mask="original"))
                   for name, overrides in experiment.cells()]
    else:
        configs = [resolve_config(config_path, {"mask": "original"})]
    patients, seen = set(), set()
    for config in configs:
        key = (config.data, config.tfds_data_dir, repr(config.curation()), config.seed if config.data == "demo" else 0)
        if key in seen:
            continue
        seen.add(key)
        data, _ = resolve_data(config)
        records = load_records(PipelineConfig(data=data, masks=None, mask="original", image_size=config.image_size,
                                              curation=config.curation(), tfds_data_dir=config.tfds_data_dir))
        chosen = records[records["split"].isin(list(splits))]
        patients |= {normalise_patient_id(p) for p in chosen["patient_id"]}
        logger.info("%s: %d patients in split(s) %s of %s are left out", config_path, chosen["patient_id"].nunique(),
                    "/".join(splits), data)
    return patients


def select_images(config):
    """The images to pretrain on, after exclusions.

    Returns:
        DataFrame with image_path, image_id (file name), patient_id ("" when unknown) and
        mask_path ("" for mask=original); ``attrs["excluded"]``: counts per reason.
    """
    import pandas as pd

    paths = find_image_files(config.images)
    patient_map = read_patient_map(config.metadata)
    frame = pd.DataFrame({"image_path": [str(p) for p in paths], "image_id": [p.name for p in paths]})
    stems = [p.stem for p in paths]
    frame["patient_id"] = [patient_of(stem, patient_map) or "" for stem in stems]
    excluded = {}
    keep = pd.Series(True, index=frame.index)
    if config.exclude_list:
        listed = read_exclude_list(config.exclude_list)
        hit = pd.Series([s in listed for s in stems]) | frame["patient_id"].isin(listed)
        excluded["exclude_list"] = int((hit & keep).sum())
        keep &= ~hit
    if config.exclude_split_of:
        held_out = split_patients(config.exclude_split_of, config.exclude_splits)
        hit = frame["patient_id"].isin(held_out)
        excluded["split"] = int((hit & keep).sum())
        keep &= ~hit
        unknown = int((frame["patient_id"][keep] == "").sum())
        if unknown:
            logger.warning("%d images have no known patient id (not NIH-named, not in `metadata`); they cannot be "
                           "matched against the held-out split and are kept", unknown)
    frame = frame[keep].reset_index(drop=True)
    if config.mask != "original":
        frame["mask_path"] = [str(pathlib.Path(config.masks) / f"{pathlib.Path(i).stem}.png") for i in frame["image_id"]]
        has_mask = frame["mask_path"].map(lambda p: pathlib.Path(p).is_file())
        if not has_mask.all():
            missing = frame["mask_path"][~has_mask].tolist()
            if not config.skip_missing_masks:
                raise FileNotFoundError(f"{missing[0]}: lung mask missing ({len(missing)} of {len(frame)} images "
                                        f"have none in {config.masks}); generate them or set skip_missing_masks")
            excluded["no_mask"] = len(missing)
            frame = frame[has_mask].reset_index(drop=True)
    else:
        frame["mask_path"] = ""
    if config.max_images is not None and len(frame) > int(config.max_images):
        frame = frame.sample(n=int(config.max_images), random_state=config.seed).sort_index().reset_index(drop=True)
    if len(frame) < int(config.batch_size):
        raise ValueError(f"{', '.join(config.images)}: {len(frame)} images left after exclusions ({excluded}), "
                         f"fewer than batch_size={config.batch_size}")
    frame.attrs["excluded"] = excluded
    return frame
