"""Tests of tfcxr.data.synthetic: config, cases, files and CLI, determinism, exact masks, learnability, pinned output."""

import dataclasses
import hashlib
import json

import cv2
import numpy as np
import pandas as pd
import pytest

from permission_helpers import mode, not_shared
from tfcxr.data import synthetic
from tfcxr.labels import NO_FINDING, TARGETS, parse_finding_labels


@pytest.fixture(scope="module")
def small_set():
    """400 images at 64 px in memory (about 2 s)."""
    config = synthetic.SyntheticConfig(num_images=400, image_size=64, seed=1)
    return synthetic.generate_arrays(config)


def test_config_validation_echoes_value():
    with pytest.raises(ValueError, match="image_size=8"):
        synthetic.SyntheticConfig(image_size=8)
    with pytest.raises(ValueError, match="prevalence=1.5"):
        synthetic.SyntheticConfig(prevalence=1.5)
    with pytest.raises(ValueError, match="num_patients=20"):
        synthetic.SyntheticConfig(num_images=10, num_patients=20)


def test_generate_layout_csv_and_idempotence(tmp_path, umask):
    umask(0o022)
    config = synthetic.SyntheticConfig(num_images=24, image_size=64, seed=3)
    out = synthetic.generate(tmp_path / "syn", config)
    assert not_shared(out) == [] and mode(out / "config.json") == 0o644 and mode(out / "masks") == 0o755
    meta = pd.read_csv(out / "Data_Entry_2017.csv")
    assert list(meta.columns[:7]) == [
        "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
        "View Position",
    ]
    assert len(meta) == 24 and meta["Image Index"].is_unique
    assert meta["Patient ID"].nunique() == 8  # num_images // 3
    assert set(meta["View Position"]) <= {"PA", "AP"} and set(meta["Patient Gender"]) <= {"M", "F"}
    for row in meta.itertuples():
        parse_finding_labels(row[2], source=row[1])  # NIH vocabulary, '|'-separated
        assert row[1] == f"{row[4]:08d}_{row[3]:03d}.png"
        image = cv2.imread(str(out / "images" / row[1]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(out / "masks" / row[1]), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.shape == (64, 64)
        assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255}
    assert json.loads((out / "config.json").read_text())["num_images"] == 24
    boxes = pd.read_csv(out / "BBox_List_2017.csv")
    assert set(boxes["Finding Label"]) <= {"Mass", "Nodule", "Pneumonia"}

    # Same config: reused, files untouched.
    stamp = (out / "images" / meta["Image Index"][0]).stat().st_mtime_ns
    synthetic.generate(out, config)
    assert (out / "images" / meta["Image Index"][0]).stat().st_mtime_ns == stamp
    # Different config: redrawn; stale files of the old set removed.
    synthetic.generate(out, synthetic.SyntheticConfig(num_images=6, image_size=64, seed=3))
    assert len(list((out / "images").glob("*.png"))) == 6
    assert len(pd.read_csv(out / "Data_Entry_2017.csv")) == 6


def test_deterministic_and_seed_dependent():
    config = synthetic.SyntheticConfig(num_images=6, image_size=64, seed=7)
    a, ma, ya, _ = synthetic.generate_arrays(config)
    b, mb, yb, _ = synthetic.generate_arrays(config)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    np.testing.assert_array_equal(ya, yb)
    c, _, _, _ = synthetic.generate_arrays(synthetic.SyntheticConfig(num_images=6, image_size=64, seed=8))
    assert not np.array_equal(a, c)


def test_masks_exact_two_lungs(small_set):
    images, masks, _, _ = small_set
    fractions = masks.mean(axis=(1, 2))
    assert fractions.min() > 0.12 and fractions.max() < 0.45
    for mask in masks[:20]:
        count, _ = cv2.connectedComponents(mask.astype(np.uint8))
        assert count - 1 == 2  # background + two lungs
    # Lungs are darker than the rest of the body.
    assert images[masks].mean() < images[~masks].mean()


def test_prevalence_and_no_finding(small_set):
    _, _, labels, cases = small_set
    assert np.all((labels.mean(axis=0) > 0.12) & (labels.mean(axis=0) < 0.3))
    no_finding = np.mean([c.finding_labels == NO_FINDING for c in cases])
    assert 0.2 < no_finding < 0.45


def _features(images):
    """Generic pooled features: 4x4 grid mean/std/max of the image, a high-pass and two band-passes."""
    x = images.astype(np.float32) / 255.0
    rows = []
    for image in x:
        bands = (
            image,
            image - cv2.GaussianBlur(image, (0, 0), 1.5),
            cv2.GaussianBlur(image, (0, 0), 1.0) - cv2.GaussianBlur(image, (0, 0), 3.0),
            cv2.GaussianBlur(image, (0, 0), 2.0) - cv2.GaussianBlur(image, (0, 0), 5.0),
        )
        feats = []
        for band in bands:
            cells = band.reshape(4, 16, 4, 16).transpose(0, 2, 1, 3).reshape(16, -1)
            feats += [cells.mean(1), cells.std(1), cells.max(1)]
        rows.append(np.concatenate(feats))
    return np.asarray(rows)


@pytest.mark.parametrize("masking", ["original", "tight"])
def test_labels_learnable_and_survive_tight_masking(small_set, masking):
    """Logistic regression on pooled features beats chance clearly on held-out patients."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    images, masks, labels, cases = small_set
    inputs = images * masks if masking == "tight" else images
    features = _features(inputs)
    test = np.array([c.patient_id % 3 == 0 for c in cases])
    aucs = []
    for k in range(len(TARGETS)):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        model.fit(features[~test], labels[~test, k])
        aucs.append(roc_auc_score(labels[test, k], model.predict_proba(features[test])[:, 1]))
    assert np.mean(aucs) > 0.7, dict(zip(TARGETS, np.round(aucs, 3)))
    if masking == "tight":  # in `original`, electrodes outside the lungs mimic masses on purpose
        assert min(aucs) > 0.6, dict(zip(TARGETS, np.round(aucs, 3)))


def test_cli(tmp_path):
    out = tmp_path / "cli"
    assert synthetic.main(["--out", str(out), "--num-images", "5", "--image-size", "48", "--seed", "2"]) == 0
    assert len(pd.read_csv(out / "Data_Entry_2017.csv")) == 5
    assert synthetic.main(["--out", str(out), "--num-images", "5", "--image-size", "8"]) == 2
    parser = synthetic.build_parser()
    assert parser.parse_args(["--no-distractors"]).distractors is False


# sha256 of generate_arrays' (images, masks, labels) bytes and of render_case's boxes (repr of floats), recorded with
# this repository's numpy/OpenCV before the phantom drawing was split out of this module. Both sets hold all five
# findings, AP and PA views and follow-ups. A drawing change must bump GENERATOR_VERSION and update these.
# Version 5 added the endotracheal tube; with `tube_rate=0` it draws version 4's sets to the byte. The last entry is
# the demo as it ships (default `tube_rate`; 4 of its 8 images carry a tube).
_PINNED_OUTPUT = [
    (
        dict(num_images=8, image_size=64, seed=0, prevalence=0.5, tube_rate=0.0),
        "e4dcb161ed51d883e2d0fe16c7137629719d1e0234b72c1fb06e051b92c92445",
        "705e863a0c900d098f990298a8d9993ca48988f4b69bdc16471e252acaf00334",
    ),
    (
        dict(num_images=6, image_size=96, seed=3, prevalence=0.7, distractors=False, num_patients=2, tube_rate=0.0),
        "d5dc70f92255dafaa1d1a95e50539a1234242a8ef3d3a02a230e516206207080",
        "73a9f9aff51b1ee8175371c99048cabb16ffdbe1c6eda5e548774b23cf9f2e5b",
    ),
    (
        dict(num_images=8, image_size=64, seed=0, prevalence=0.5),
        "91285406a00b8a6cc67168f7f1fb7f9b055ca503acee03b2f4e791f9c8b29f43",
        "705e863a0c900d098f990298a8d9993ca48988f4b69bdc16471e252acaf00334",  # a tube adds no finding box
    ),
]


@pytest.mark.parametrize("fields,arrays_sha256,boxes_sha256", _PINNED_OUTPUT)
def test_output_bit_identical_to_pinned_hash(fields, arrays_sha256, boxes_sha256):
    assert synthetic.GENERATOR_VERSION == 5
    config = synthetic.SyntheticConfig(**fields)
    images, masks, labels, cases = synthetic.generate_arrays(config)
    digest = hashlib.sha256()
    for array in (images, masks, labels):
        digest.update(np.ascontiguousarray(array).tobytes())
    assert digest.hexdigest() == arrays_sha256
    boxes = hashlib.sha256()
    for case in cases:
        _, _, case_boxes = synthetic.render_case(case, config, return_boxes=True)
        boxes.update(repr([(label, float(x), float(y), float(w), float(h)) for label, x, y, w, h in case_boxes]).encode())
    assert boxes.hexdigest() == boxes_sha256


def test_tubes_go_with_edema_and_pneumonia_lie_outside_the_lungs_and_change_nothing_else():
    config = synthetic.SyntheticConfig(num_images=400, image_size=64, seed=1)
    cases = synthetic.sample_cases(config)
    tube = np.array([c.tube for c in cases])
    icu = np.array([any(t in c.findings for t in synthetic.TUBE_FINDINGS) for c in cases])
    assert 0.7 < tube[icu].mean() < 0.9 and tube[~icu].mean() < 0.15  # tube_rate 0.8, a tenth of it otherwise
    none = synthetic.sample_cases(dataclasses.replace(config, tube_rate=0.0))
    assert not any(c.tube for c in none)
    assert [dataclasses.replace(c, tube=False) for c in cases] == none  # the other draws are unchanged
    shown = [c for c in cases if c.tube][:3]
    for case in shown:
        image, mask = synthetic.render_case(case, config)
        plain, same_mask = synthetic.render_case(dataclasses.replace(case, tube=False), config)
        assert np.array_equal(mask, same_mask) and np.array_equal(image[mask], plain[mask])  # lungs untouched
        assert (image.astype(int) - plain).max() > 60  # a bright tube outside them
    with pytest.raises(ValueError, match="tube_rate"):
        synthetic.SyntheticConfig(tube_rate=1.5)
    assert synthetic.build_parser().parse_args(["--tube-rate", "0"]).tube_rate == 0.0
