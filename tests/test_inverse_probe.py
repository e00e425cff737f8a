"""The `inverse` mask mode as a shortcut probe, on the synthetic demo (tfcxr.data.synthetic).

A logistic regression on downsampled inverse-masked pixels (the lungs removed) is scored on held-out
patients. The synthetic findings are drawn inside the lungs only and its distractors outside the lungs
are label-unrelated, so the probe must find nothing there; once a label-correlated cue is painted
outside the lungs (a shortcut, like a portable-film marker), it must find it.
"""

import numpy as np
import pytest

from tfcxr.data import synthetic
from tfcxr.data.lung_distance import lung_distance
from tfcxr.labels import TARGETS
from tfcxr.mask_spec import MaskSpec

SIZE = 64


@pytest.fixture(scope="module")
def demo():
    images, masks, labels, cases = synthetic.generate_arrays(
        synthetic.SyntheticConfig(num_images=240, image_size=SIZE, seed=2))
    images = images.astype(np.float32)[..., None] / 255.0  # (n, 64, 64, 1) in [0, 1]
    held_out = np.array([case.patient_id % 3 == 0 for case in cases])
    return images, masks[..., None], labels, held_out


def _macro_auroc(inputs, labels, held_out):
    """Macro AUROC of one logistic regression per target on 16x16 mean-pooled pixels, fitted on the rest."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = inputs.reshape(len(inputs), 16, SIZE // 16, 16, SIZE // 16).mean(axis=(2, 4)).reshape(len(inputs), -1)
    aucs = []
    for k in range(len(TARGETS)):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        model.fit(features[~held_out], labels[~held_out, k])
        aucs.append(roc_auc_score(labels[held_out, k], model.predict_proba(features[held_out])[:, 1]))
    return float(np.mean(aucs)), aucs


def _with_shortcut(images, masks, labels, seed=0):
    """Paint, for each target, a faint 6x6 patch in its own spot along the bottom border, on 80% of its positives
    and 10% of its negatives, and only where it lies outside the lungs."""
    rng = np.random.default_rng(seed)
    out = images.copy()
    for k in range(len(TARGETS)):
        shown = np.where(labels[:, k] == 1, rng.random(len(labels)) < 0.8, rng.random(len(labels)) < 0.1)
        x = 2 + 12 * k
        patch = out[shown, SIZE - 8 : SIZE - 2, x : x + 6]
        outside = masks[shown, SIZE - 8 : SIZE - 2, x : x + 6] == 0
        out[shown, SIZE - 8 : SIZE - 2, x : x + 6] = np.where(outside, np.clip(patch + 0.25, 0, 1), patch)
    return out


def test_inverse_probe_finds_a_shortcut_outside_the_lungs_and_nothing_without_one(demo):
    images, masks, labels, held_out = demo
    spec = MaskSpec("inverse", margin=0.05, image_size=SIZE)  # the complement of `loose`
    distances = np.stack([lung_distance(m > 0) for m in masks.reshape(masks.shape[:3])])[..., None]
    inverse = spec.apply_at_training(images, distances).numpy()
    assert np.all(inverse[masks.astype(bool)] == 0)  # the lungs are gone

    # The demo puts every label's signal inside the lungs: without the lungs the probe is at chance,
    # while the whole image carries the labels.
    plain, _ = _macro_auroc(inverse, labels, held_out)
    assert 0.35 < plain < 0.62, plain
    assert _macro_auroc(images, labels, held_out)[0] > 0.62

    shortcut = _with_shortcut(images, masks, labels)
    probed, aucs = _macro_auroc(spec.apply_at_training(shortcut, distances).numpy(), labels, held_out)
    assert probed > 0.6 and probed > plain + 0.1, dict(zip(TARGETS, np.round(aucs, 3)))
    tight, _ = _macro_auroc(MaskSpec("tight", 0, image_size=SIZE).apply_at_training(shortcut, distances).numpy(),
                            labels, held_out)
    assert tight < probed  # `tight` removes the cue that `inverse` keeps
