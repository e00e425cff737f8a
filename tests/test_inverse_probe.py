"""The `inverse` mask mode as a shortcut probe, on the synthetic demo (tfcxr.data.synthetic).

A logistic regression on downsampled inverse-masked pixels (the lungs removed) is scored on held-out
patients. The demo draws every finding inside the lungs; outside them it draws label-unrelated distractors
and an endotracheal tube that goes with Edema and Pneumonia (`tube_rate`). So without the lungs the probe
must still find those two findings (the shortcut), and nothing once the demo draws no tube.
The same probe with tfcxr's classifier is `configs/probe_synthetic.yaml`.
"""

import numpy as np

from tfcxr.data import synthetic
from tfcxr.data.lung_distance import lung_distance
from tfcxr.labels import TARGETS
from tfcxr.mask_spec import MaskSpec

SIZE = 64
TUBE = [TARGETS.index(t) for t in synthetic.TUBE_FINDINGS]
OTHERS = [k for k in range(len(TARGETS)) if k not in TUBE]


def _demo(tube_rate):
    config = synthetic.SyntheticConfig(num_images=800, image_size=SIZE, seed=2, tube_rate=tube_rate)
    images, masks, labels, cases = synthetic.generate_arrays(config)
    images = images.astype(np.float32)[..., None] / 255.0  # (n, 64, 64, 1) in [0, 1]
    held_out = np.array([case.patient_id % 3 == 0 for case in cases])
    return images, masks[..., None], labels, held_out


def _aurocs(inputs, labels, held_out):
    """AUROC per target of one logistic regression each on 16x16 mean-pooled pixels, fitted on the rest."""
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
    return np.array(aucs)


def _masked(spec, images, masks):
    distances = np.stack([lung_distance(m > 0) for m in masks.reshape(masks.shape[:3])])[..., None]
    return spec.apply_at_training(images, distances).numpy()


def test_inverse_probe_finds_the_demos_tube_shortcut_and_nothing_without_it():
    spec = MaskSpec("inverse", margin=0.05, image_size=SIZE)  # the complement of `loose`
    probed, tight = {}, {}
    for tube_rate in (synthetic.SyntheticConfig().tube_rate, 0.0):  # the demo as it ships, and with no tube
        images, masks, labels, held_out = _demo(tube_rate)
        tight[tube_rate] = images * masks
        inverse = _masked(spec, images, masks)
        assert np.all(inverse[masks.astype(bool)] == 0)  # the lungs are gone
        probed[tube_rate] = aucs = _aurocs(inverse, labels, held_out)
        shown = dict(zip(TARGETS, np.round(aucs, 3)))
        assert all(0.35 < aucs[k] < 0.65 for k in OTHERS), shown  # their signal is inside the lungs only
        assert _aurocs(images, labels, held_out).mean() > 0.62  # the whole image carries the labels
    with_tube, without = probed.values()
    assert np.array_equal(*tight.values())  # `tight` removes the tube: its inputs are the same with and without
    assert with_tube[TUBE].min() > 0.65 and with_tube[TUBE].mean() > with_tube[OTHERS].mean() + 0.15, with_tube
    assert without.max() < 0.62 and 0.4 < without.mean() < 0.6, without  # no tube: at chance
