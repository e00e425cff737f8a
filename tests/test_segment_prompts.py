"""Tests for tfcxr.segment.prompts: boxes, priors, post-processing, refinement and the exportable lung_masks_tf."""

import json

import numpy as np
import pytest

from tfcxr.segment import prompts


def two_lungs(height=100, width=120):
    mask = np.zeros((height, width), bool)
    mask[20:80, 10:50] = True  # image-left lung
    mask[15:85, 70:110] = True  # image-right lung
    return mask


@pytest.fixture(scope="module")
def tiny():
    from tfcxr.segment import load_segmenter

    return load_segmenter("tiny")


def test_components_and_boxes_left_to_right():
    mask = two_lungs()
    mask[0:2, 0:2] = True  # speck, dropped (< 5% of the largest)
    parts = prompts.lung_components(mask)
    assert len(parts) == 2 and parts[0][50, 20] and parts[1][50, 80]
    np.testing.assert_array_equal(prompts.component_boxes(mask), [[10, 20, 49, 79], [70, 15, 109, 84]])
    assert prompts.component_boxes(np.zeros((5, 5), bool)).shape == (0, 4)
    with pytest.raises(ValueError, match="2-D"):
        prompts.lung_components(np.zeros((2, 2, 2)))


def test_jitter_moves_sides_outwards_within_limit():
    boxes = np.array([[10.0, 20.0, 49.0, 79.0]] * 50)
    out = prompts.jitter_boxes(boxes, 5.0, (100, 120), np.random.default_rng(0))
    delta = (out - boxes) * np.array([-1, -1, 1, 1])
    assert np.all(delta >= 0) and np.all(delta <= 5.0) and delta.max() > 2.0
    edge = prompts.jitter_boxes(np.array([[0.0, 0.0, 119.0, 99.0]]), 20.0, (100, 120), np.random.default_rng(1))
    np.testing.assert_array_equal(edge, [[0, 0, 119, 99]])


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


def test_mask_stability_is_high_for_sharp_borders_and_low_for_vague_ones():
    yy, xx = np.mgrid[:64, :64]
    distance = np.minimum(np.hypot(xx - 18, yy - 32), np.hypot(xx - 46, yy - 32)) - 10  # two round "lungs"
    sharp, vague = -distance * 100.0, -distance * 0.3  # logits: steep or shallow across the border
    assert prompts.mask_stability(sharp) > 0.95 and prompts.mask_stability(vague) < 0.7
    assert prompts.mask_stability(np.full((8, 8), -50.0)) == 1.0  # nothing on either side


def test_qc_flags_unstable_masks():
    from tfcxr.segment import qc

    lungs = two_lungs()
    assert "unstable" in qc.mask_stats(lungs, stability=qc.MIN_STABILITY - 0.01)["flags"]
    stats = qc.mask_stats(lungs, stability=0.99)
    assert "unstable" not in stats["flags"] and stats["stability"] == 0.99


def test_threshold_setting_changes_the_mask(tiny):
    image = np.random.default_rng(3).random((64, 64, 1), dtype=np.float32)
    low, high = (prompts.segment_lungs(tiny, [image], "prior", settings=prompts.InferenceSettings(threshold=t))[0]
                 for t in (-20.0, 20.0))
    assert low.sum() >= high.sum() and low.sum() > 0 and not high.any()


def test_clean_fills_holes_and_keeps_two_largest():
    mask = two_lungs()
    mask[40:50, 20:30] = False  # hole
    mask[90:95, 55:60] = True  # third, small component
    cleaned = prompts.clean_lung_mask(mask)
    assert cleaned[45, 25] and not cleaned[92, 57]
    assert cleaned.sum() == two_lungs().sum()


def test_refine_boxes_bbox_plus_margin_and_keeps_empty():
    import tensorflow as tf

    logits = -np.ones((1, 2, 16, 16), np.float32)
    logits[0, 0, 4:8, 2:6] = 1.0  # rows 4..7, cols 2..5 of a 16x16 frame over a 64 input: scale 4
    boxes = np.array([[[0, 0, 63, 63], [1, 2, 3, 4]]], np.float32)
    out = prompts.refine_boxes(tf.constant(logits), boxes, image_size=64, margin=0.0625)  # 4 px
    np.testing.assert_allclose(out[0, 0], [2 * 4 - 4, 4 * 4 - 4, 6 * 4 - 1 + 4, 8 * 4 - 1 + 4])
    np.testing.assert_allclose(out[0, 1], boxes[0, 1])  # empty prediction keeps its box
    logits[0, 0, 13:15, 13:15] = 0.5  # a positive speck far from the lung must not stretch the box
    speck = prompts.refine_boxes(tf.constant(logits), boxes, image_size=64, margin=0.0625)
    np.testing.assert_allclose(speck, out)


def test_peak_component_follows_the_region_around_the_highest_logit():
    def u_shape(with_bar):
        logits = -np.ones((1, 2, 32, 32), np.float32)  # 4-px cells: an 8x8 grid
        logits[0, 0, 1:14, 1:3] = 1.0  # left arm
        logits[0, 0, 1:14, 17:19] = 1.0  # right arm, 3 cells away from the left one
        if with_bar:
            logits[0, 0, 12:14, 1:19] = 1.0  # joins the arms at the bottom
        logits[0, 0, 2, 18] = 5.0  # the peak, top of the right arm
        logits[0, 0, 24:32, 24:32] = 2.0  # a separate, bigger block
        return logits  # map 1: nothing positive

    joined = np.asarray(prompts.peak_component(u_shape(True)))
    expected = u_shape(True)[0, 0] > 0
    expected[24:32, 24:32] = False
    np.testing.assert_array_equal(joined[0, 0], expected)  # both arms via the bar, not the block
    cropped = np.asarray(prompts.peak_component(u_shape(True)[..., :30, :29]))  # sizes not divisible by the cell
    np.testing.assert_array_equal(cropped[0, 0], expected[:30, :29])
    assert not joined[0, 1].any()
    apart = np.asarray(prompts.peak_component(u_shape(False)))
    expected = np.zeros((32, 32), bool)
    expected[1:14, 17:19] = True
    np.testing.assert_array_equal(apart[0, 0], expected)  # only the arm that holds the peak


def test_segment_lungs_shapes_and_validation(tiny):
    rng = np.random.default_rng(0)
    images = [rng.random((90, 70, 1), dtype=np.float32), rng.random((50, 60, 1), dtype=np.float32)]
    gt = [two_lungs(90, 70), np.zeros((50, 60), bool)]  # an empty gt mask falls back to the priors
    for prompt in prompts.PROMPTS:
        masks = prompts.segment_lungs(tiny, images, prompt, gt_masks=gt, batch_size=1)
        assert [m.shape for m in masks] == [(90, 70), (50, 60)] and masks[0].dtype == bool
    with pytest.raises(ValueError, match="gt_masks"):
        prompts.segment_lungs(tiny, images, "gt")
    with pytest.raises(ValueError, match="prompt='box'"):
        prompts.segment_lungs(tiny, images, "box")


def test_lung_masks_tf_traces_and_saved_model_round_trip(tiny, tmp_path):
    import tensorflow as tf

    images = np.random.default_rng(1).random((2, 72, 60, 1), dtype=np.float32)
    eager = prompts.lung_masks_tf(tiny, images)  # the model's own settings: refine, 1 round
    assert eager.shape == (2, 72, 60, 1) and eager.dtype == tf.float32
    assert set(np.unique(eager.numpy())) <= {0.0, 1.0}
    reference = prompts.segment_lungs(tiny, list(images), "refine",
                                      settings=prompts.InferenceSettings(clean=False))
    agreement = np.mean(eager.numpy()[..., 0] == np.stack(reference))
    assert agreement > 0.99

    class Segmenter(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
        def __call__(self, x):
            return prompts.lung_masks_tf(self.model, x)

    module = Segmenter(tiny)
    traced = module(tf.constant(images))
    np.testing.assert_array_equal(traced.numpy(), eager.numpy())
    tf.saved_model.save(module, str(tmp_path / "sm"))
    restored = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_array_equal(restored(tf.constant(images)).numpy(), eager.numpy())
