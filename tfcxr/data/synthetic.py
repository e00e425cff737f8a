"""Seeded synthetic chest X-rays with exact lung masks: tfcxr's demo and test data.

Each image is a phantom radiograph: body outline, two dark lungs (a jittered
lung-shaped polygon per side, so size, shape and position vary per patient),
bright mediastinum, spine and heart, ribs and clavicles, vessel texture and
noise. The lung mask is the exact union of both lung polygons (the heart is cut
out of them), so it is pixel-exact ground truth.

Findings are drawn INSIDE the lung mask only (the finding layer is multiplied by
the hard mask), so masking to the lungs can never remove a label's signal:

- Mass: one large bright lobulated blob.
- Nodule: three to six small bright dots.
- Fibrosis: reticular texture (many short thin lines), mostly basal and peripheral.
- Edema: diffuse bilateral perihilar haze with a few Kerley B lines at the bases.
- Pneumonia: one focal patchy haze in one zone (lobe) of one lung.

Label-unrelated distractors (ring-shaped ECG electrodes, wires, a side marker)
are drawn OUTSIDE the lungs only (at least one pixel away), so `original` images
carry bright nuisance context that tight masking removes and loose masking
partly keeps. This makes the demo favour masking by design: read mask-mode
comparisons on synthetic data as a pipeline check, not as evidence.

One piece of outside context does follow the labels, as in real ICU films: an
endotracheal tube down the mediastinum on `tube_rate` (default 0.8) of the
images with Edema or Pneumonia and a tenth of that rate on the others. It is a
shortcut outside the lungs: the `inverse` mask mode (lungs removed) can still
detect those two findings, which is what that shortcut probe is for. `tube_rate=0`
draws no tube.

Labels are independent Bernoulli draws per image and target (default
prevalence 0.2, so about a third of images are "No Finding"); a few images also
carry a non-target NIH finding (not drawn) to exercise curation. Patients have
one or more follow-up images sharing their anatomy, so patient-level splits matter.

This module owns the set: its config, the cases (metadata and seeds), the files
and the CLI. The drawing of one case is `tfcxr.data.phantom.render_case`
(re-exported here), built from `phantom_anatomy`, `phantom_findings`,
`phantom_distractors` and `phantom_draw` in `tfcxr.data`.

Layout written by `generate` (the NIH-like contract)::

    out_dir/images/<image_id>.png   uint8 gray (S, S)
    out_dir/masks/<image_id>.png    uint8 0/255 union of both lungs, (S, S)
    out_dir/Data_Entry_2017.csv     NIH columns, '|'-separated Finding Labels
    out_dir/BBox_List_2017.csv      NIH-style boxes for Mass, Nodule and Pneumonia
    out_dir/config.json             the config; written last, marks a complete set

CLI::

    python -m tfcxr.data.synthetic --out demo_data/synthetic --num-images 600 --image-size 256 --seed 0
"""

import argparse
import dataclasses
import json
import logging
import pathlib
import time

import numpy as np
import pandas as pd

from tfcxr import cli
from tfcxr.atomic import write_text_atomic
from tfcxr.data.io import write_png_atomic
from tfcxr.data.phantom import render_case  # re-exported: synthetic.render_case
from tfcxr.labels import NIH_FINDINGS, NO_FINDING, TARGETS

logger = logging.getLogger(__name__)

DEFAULT_DEMO_DIR = pathlib.Path("demo_data") / "synthetic"
METADATA_NAME = "Data_Entry_2017.csv"
BBOX_NAME = "BBox_List_2017.csv"
CONFIG_NAME = "config.json"
# Bump when the drawing changes, so cached demo sets are regenerated.
GENERATOR_VERSION = 5

_OTHER_FINDINGS = tuple(name for name in NIH_FINDINGS if name not in TARGETS)
TUBE_FINDINGS = ("Edema", "Pneumonia")  # the targets an endotracheal tube goes with (intubated ICU patients)


@dataclasses.dataclass
class SyntheticConfig:
    """How to generate a synthetic NIH-like set.

    Attributes:
        num_images: number of images (rows of the CSV).
        image_size: S, images and masks are (S, S) uint8.
        num_patients: patients the images are spread over (each has at least one
            image); `None` means `max(1, num_images // 3)`.
        seed: master seed; the same config gives byte-identical files.
        prevalence: probability that an image has a given target (independent per target).
        other_finding_rate: probability that an image also lists one non-target
            NIH finding (not drawn), to exercise curation.
        ap_fraction: fraction of AP views (larger heart, lower contrast); the rest are PA.
        distractors: draw label-unrelated electrodes, wires and a marker outside the lungs (not the tube).
        tube_rate: probability of an endotracheal tube (outside the lungs) on an image with Edema or
            Pneumonia; other images get one with a tenth of it. 0 draws none.
        noise_std: std of the pixel noise on the [0, 1] intensity scale.
    """

    num_images: int = 600
    image_size: int = 256
    num_patients: int = None
    seed: int = 0
    prevalence: float = 0.2
    other_finding_rate: float = 0.05
    ap_fraction: float = 0.4
    distractors: bool = True
    tube_rate: float = 0.8
    noise_std: float = 0.02

    def __post_init__(self):
        if int(self.num_images) < 1:
            raise ValueError(f"`num_images` must be >= 1. Received: num_images={self.num_images}")
        if not 32 <= int(self.image_size) <= 4096:
            raise ValueError(f"`image_size` must be in [32, 4096]. Received: image_size={self.image_size}")
        if self.num_patients is not None and not 1 <= int(self.num_patients) <= int(self.num_images):
            raise ValueError(
                f"`num_patients` must be in [1, num_images={self.num_images}] or None. "
                f"Received: num_patients={self.num_patients}"
            )
        for name in ("prevalence", "other_finding_rate", "ap_fraction", "tube_rate"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1]. Received: {name}={value}")
        if float(self.noise_std) < 0:
            raise ValueError(f"`noise_std` must be >= 0. Received: noise_std={self.noise_std}")

    @property
    def resolved_num_patients(self):
        """Number of patients actually used."""
        if self.num_patients is None:
            return max(1, int(self.num_images) // 3)
        return int(self.num_patients)

    def to_dict(self):
        """JSON-able dict of the config plus the generator version."""
        return {**dataclasses.asdict(self), "generator_version": GENERATOR_VERSION}


@dataclasses.dataclass(frozen=True)
class Case:
    """One synthetic image: its metadata and the seeds that draw it.

    `findings` are the targets drawn inside the lungs (TARGETS order);
    `other_findings` are listed in the CSV only; `tube`: an endotracheal tube is drawn (outside the lungs).
    """

    index: int
    image_id: str
    patient_id: int
    follow_up: int
    age: int
    sex: str
    view: str
    findings: tuple
    other_findings: tuple = ()
    tube: bool = False

    @property
    def finding_labels(self):
        """NIH `Finding Labels` string, e.g. `"Mass|Nodule"` or `"No Finding"`."""
        names = sorted(self.findings + self.other_findings)
        return "|".join(names) if names else NO_FINDING


def sample_cases(config):
    """Draw the metadata of every image (patients, follow-ups, views, labels).

    Returns:
        list of `Case`, sorted by image id (patient, then follow-up).
    """
    rng = np.random.default_rng([config.seed, 0])
    num_images = int(config.num_images)
    num_patients = config.resolved_num_patients
    # Every patient gets one image; the rest are spread with a skew, as in NIH.
    weights = rng.gamma(0.7, size=num_patients)
    extra = rng.multinomial(num_images - num_patients, weights / weights.sum())
    counts = 1 + extra
    ages = rng.integers(18, 86, size=num_patients)
    sexes = rng.choice(np.array(["M", "F"]), size=num_patients)
    labels = rng.random((num_images, len(TARGETS))) < config.prevalence
    views = np.where(rng.random(num_images) < config.ap_fraction, "AP", "PA")
    has_other = rng.random(num_images) < config.other_finding_rate
    other_pick = rng.integers(0, len(_OTHER_FINDINGS), size=num_images)
    age_steps = rng.integers(0, 2, size=num_images)
    # Its own stream, so the draws above (and every image without a tube) stay as they were before tubes.
    tube_chance = np.where(labels[:, [TARGETS.index(t) for t in TUBE_FINDINGS]].any(axis=1), 1.0, 0.1)
    tubes = np.random.default_rng([config.seed, 7]).random(num_images) < tube_chance * config.tube_rate
    cases = []
    index = 0
    for patient in range(num_patients):
        age = int(ages[patient])
        for follow_up in range(int(counts[patient])):
            age = min(age + int(age_steps[index]) * (follow_up > 0), 95)
            cases.append(
                Case(
                    index=index,
                    image_id=f"{patient + 1:08d}_{follow_up:03d}.png",
                    patient_id=patient + 1,
                    follow_up=follow_up,
                    age=age,
                    sex=str(sexes[patient]),
                    view=str(views[index]),
                    findings=tuple(t for t, on in zip(TARGETS, labels[index]) if on),
                    other_findings=(_OTHER_FINDINGS[other_pick[index]],) if has_other[index] else (),
                    tube=bool(tubes[index]),
                )
            )
            index += 1
    return cases


def generate_arrays(config, cases=None):
    """Render a whole set in memory (tests, notebooks).

    Returns:
        images: uint8 (N, S, S); masks: bool (N, S, S);
        labels: float32 (N, len(TARGETS)) 0/1 in TARGETS order; cases: list of `Case`.
    """
    cases = sample_cases(config) if cases is None else cases
    size = int(config.image_size)
    images = np.empty((len(cases), size, size), np.uint8)
    masks = np.empty((len(cases), size, size), bool)
    for i, case in enumerate(cases):
        images[i], masks[i] = render_case(case, config)
    labels = np.array([[t in c.findings for t in TARGETS] for c in cases], np.float32).reshape(-1, len(TARGETS))
    return images, masks, labels, cases


def metadata_frame(cases, image_size):
    """NIH `Data_Entry_2017.csv` rows for the cases (same columns and header as NIH's v2020 file)."""
    spacing = round(0.143 * 2048 / image_size, 6)
    return pd.DataFrame(
        {
            "Image Index": [c.image_id for c in cases],
            "Finding Labels": [c.finding_labels for c in cases],
            "Follow-up #": [c.follow_up for c in cases],
            "Patient ID": [c.patient_id for c in cases],
            "Patient Age": [c.age for c in cases],
            "Patient Gender": [c.sex for c in cases],
            "View Position": [c.view for c in cases],
            "OriginalImage[Width": image_size,
            "Height]": image_size,
            "OriginalImagePixelSpacing[x": spacing,
            "y]": spacing,
        }
    )


def _is_complete(out_dir, config):
    """True when out_dir holds a full set generated with this exact config."""
    config_path = out_dir / CONFIG_NAME
    if not config_path.is_file():
        return False
    try:
        saved = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return False
    if saved != config.to_dict():
        return False
    try:
        ids = pd.read_csv(out_dir / METADATA_NAME, usecols=["Image Index"])["Image Index"]
    except (OSError, ValueError):
        return False
    return len(ids) == config.num_images and all(
        (out_dir / "images" / name).is_file() and (out_dir / "masks" / name).is_file() for name in ids
    )


def generate(out_dir=DEFAULT_DEMO_DIR, config=None, overwrite=False):
    """Write a synthetic NIH-like set (images/, masks/, Data_Entry_2017.csv, BBox_List_2017.csv, config.json).

    Idempotent: when `out_dir` already holds a complete set made with the same
    config (its `config.json`), nothing is redrawn. A different config redraws
    the set; files of the old set that the new one does not name are removed.

    Args:
        out_dir: destination folder (created). Default `demo_data/synthetic`.
        config: `SyntheticConfig`; default `SyntheticConfig()` (600 images at 256 px).
        overwrite: redraw even when a matching set exists.

    Returns:
        `pathlib.Path` of out_dir.
    """
    config = SyntheticConfig() if config is None else config
    out_dir = pathlib.Path(out_dir)
    if not overwrite and _is_complete(out_dir, config):
        logger.info("Reusing the synthetic set in %s (same config.json).", out_dir)
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / CONFIG_NAME
    old_ids = set()
    if (out_dir / METADATA_NAME).is_file():
        old_ids = set(pd.read_csv(out_dir / METADATA_NAME, usecols=["Image Index"])["Image Index"])
    config_path.unlink(missing_ok=True)  # the set is incomplete until config.json is back

    start = time.perf_counter()
    cases = sample_cases(config)
    box_rows = []
    for case in cases:
        image, mask, boxes = render_case(case, config, return_boxes=True)
        write_png_atomic(out_dir / "images" / case.image_id, image)
        write_png_atomic(out_dir / "masks" / case.image_id, mask.astype(np.uint8) * 255)
        box_rows += [(case.image_id, label, x, y, w, h) for label, x, y, w, h in boxes]
    for stale in old_ids - {c.image_id for c in cases}:
        for folder in ("images", "masks"):
            (out_dir / folder / stale).unlink(missing_ok=True)

    metadata_frame(cases, config.image_size).to_csv(out_dir / METADATA_NAME, index=False)
    pd.DataFrame(
        box_rows, columns=["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
    ).round(2).to_csv(out_dir / BBOX_NAME, index=False)
    write_text_atomic(config_path, json.dumps(config.to_dict(), indent=2, sort_keys=True))
    logger.info(
        "Wrote %d synthetic images (%d px, %d patients) to %s in %.1f s.",
        len(cases), config.image_size, config.resolved_num_patients, out_dir, time.perf_counter() - start,
    )
    return out_dir


def build_parser():
    """Argument parser of `python -m tfcxr.data.synthetic`."""
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(
        prog="python -m tfcxr.data.synthetic",
        description="Generate a seeded synthetic NIH-like chest X-ray set with exact lung masks.",
    )
    parser.add_argument("--out", default=str(DEFAULT_DEMO_DIR), help="output folder (default: %(default)s)")
    parser.add_argument("--num-images", type=int, default=defaults.num_images)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--num-patients", type=int, default=None, help="default: num_images // 3")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--prevalence", type=float, default=defaults.prevalence, help="per-target probability")
    parser.add_argument("--other-finding-rate", type=float, default=defaults.other_finding_rate)
    parser.add_argument("--ap-fraction", type=float, default=defaults.ap_fraction)
    parser.add_argument("--distractors", action=argparse.BooleanOptionalAction, default=defaults.distractors,
                        help="label-unrelated electrodes, wires and a marker outside the lungs (the tube is "
                             "--tube-rate: --no-distractors --tube-rate 0 leaves the outside of the lungs plain)")
    parser.add_argument("--tube-rate", type=float, default=defaults.tube_rate,
                        help="endotracheal tubes on images with Edema or Pneumonia (others: a tenth of it); 0: none")
    parser.add_argument("--noise-std", type=float, default=defaults.noise_std)
    parser.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False)
    return cli.add_log_level(parser)


def main(argv=None):
    """CLI entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    return cli.run(_main, args, logger)


def _main(args) -> int:
    config = SyntheticConfig(
        num_images=args.num_images,
        image_size=args.image_size,
        num_patients=args.num_patients,
        seed=args.seed,
        prevalence=args.prevalence,
        other_finding_rate=args.other_finding_rate,
        ap_fraction=args.ap_fraction,
        distractors=args.distractors,
        tube_rate=args.tube_rate,
        noise_std=args.noise_std,
    )
    out = generate(args.out, config, overwrite=args.overwrite)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
