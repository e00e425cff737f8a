"""Tests for tfcxr.segment.prompts: prompt settings, prior boxes and the boxes of the gt prompt."""

import json

import numpy as np
import pytest

from mask_fakes import two_lungs
from tfcxr.segment import prompts


def test_jitter_moves_sides_outwards_within_limit():
    boxes = np.array([[10.0, 20.0, 49.0, 79.0]] * 50)
    out = prompts.jitter_boxes(boxes, 5.0, (100, 120), np.random.default_rng(0))
    delta = (out - boxes) * np.array([-1, -1, 1, 1])
    assert np.all(delta >= 0) and np.all(delta <= 5.0) and delta.max() > 2.0
    edge = prompts.jitter_boxes(np.array([[0.0, 0.0, 119.0, 99.0]]), 20.0, (100, 120), np.random.default_rng(1))
    np.testing.assert_array_equal(edge, [[0, 0, 119, 99]])


def test_gt_normalized_boxes_pad_one_lung_and_fall_back_when_empty():
    np.testing.assert_allclose(prompts.gt_normalized_boxes(two_lungs(), prompts.DEFAULT_PRIORS),
                               [[10 / 120, 0.2, 49 / 120, 0.79], [70 / 120, 0.15, 109 / 120, 0.84]], atol=1e-6)
    one = two_lungs()
    one[:, 60:] = False
    boxes = prompts.gt_normalized_boxes(one, prompts.DEFAULT_PRIORS)
    assert boxes.shape == (2, 4)
    np.testing.assert_array_equal(boxes[0], boxes[1])
    empty = np.zeros((10, 10), bool)
    assert prompts.gt_normalized_boxes(empty, prompts.DEFAULT_PRIORS) is prompts.DEFAULT_PRIORS


def test_fit_priors_and_read_a_version_1_priors_file(tmp_path):
    priors = prompts.fit_priors([two_lungs(), two_lungs(), np.ones((10, 10), bool), np.zeros((10, 10), bool)])
    np.testing.assert_allclose(priors, [[10 / 120, 0.2, 49 / 120, 0.79], [70 / 120, 0.15, 109 / 120, 0.84]],
                               atol=0.01)
    np.testing.assert_array_equal(prompts.fit_priors([np.ones((5, 5), bool)]), prompts.DEFAULT_PRIORS)
    path = tmp_path / prompts.PRIORS_FILENAME
    path.write_text(json.dumps({"boxes": priors.tolist()}))
    np.testing.assert_allclose(prompts.read_priors_file(path), priors, atol=1e-6)
    for bad in ({"boxes": [[0, 0, 2, 1]]}, {"boxes": [[0.5, 0, 0.1, 1], [0, 0, 1, 1]]}, {"nope": 1}):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="lung_priors.json"):
            prompts.read_priors_file(path)


def test_inference_settings_validate_and_round_trip():
    settings = prompts.InferenceSettings(prompt="prior", refine_rounds=2, margin=0.03, threshold=-0.5, clean=False)
    assert prompts.InferenceSettings.from_dict(settings.to_dict()) == settings
    assert settings.rounds == 0 and settings.replace(prompt="refine").rounds == 2
    assert settings.replace(margin=None, threshold=0.25).threshold == 0.25
    for bad, match in ((dict(prompt="gt"), "prompt"), (dict(refine_rounds=0), "refine_rounds"),
                       (dict(margin=0.5), "margin"), (dict(threshold=99.0), "threshold")):
        with pytest.raises(ValueError, match=match):
            prompts.InferenceSettings(**bad)
    with pytest.raises(ValueError, match="unknown inference settings"):
        prompts.InferenceSettings.from_dict({"prompt": "refine", "rounds": 1})
