"""Tests for tfcxr.segment.tf_masks: in-graph box refinement and the exportable lung_masks_tf."""

import numpy as np
import pytest

from tfcxr.segment import tf_masks


@pytest.fixture(scope="module")
def tiny():
    from tfcxr.segment import load_segmenter

    return load_segmenter("tiny")


def test_refine_boxes_bbox_plus_margin_and_keeps_empty():
    import tensorflow as tf

    logits = -np.ones((1, 2, 16, 16), np.float32)
    logits[0, 0, 4:8, 2:6] = 1.0  # rows 4..7, cols 2..5 of a 16x16 frame over a 64 input: scale 4
    boxes = np.array([[[0, 0, 63, 63], [1, 2, 3, 4]]], np.float32)
    out = tf_masks.refine_boxes(tf.constant(logits), boxes, image_size=64, margin=0.0625)  # 4 px
    np.testing.assert_allclose(out[0, 0], [2 * 4 - 4, 4 * 4 - 4, 6 * 4 - 1 + 4, 8 * 4 - 1 + 4])
    np.testing.assert_allclose(out[0, 1], boxes[0, 1])  # empty prediction keeps its box
    logits[0, 0, 13:15, 13:15] = 0.5  # a positive speck far from the lung must not stretch the box
    speck = tf_masks.refine_boxes(tf.constant(logits), boxes, image_size=64, margin=0.0625)
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

    joined = np.asarray(tf_masks.peak_component(u_shape(True)))
    expected = u_shape(True)[0, 0] > 0
    expected[24:32, 24:32] = False
    np.testing.assert_array_equal(joined[0, 0], expected)  # both arms via the bar, not the block
    cropped = np.asarray(tf_masks.peak_component(u_shape(True)[..., :30, :29]))  # sizes not divisible by the cell
    np.testing.assert_array_equal(cropped[0, 0], expected[:30, :29])
    assert not joined[0, 1].any()
    apart = np.asarray(tf_masks.peak_component(u_shape(False)))
    expected = np.zeros((32, 32), bool)
    expected[1:14, 17:19] = True
    np.testing.assert_array_equal(apart[0, 0], expected)  # only the arm that holds the peak


def test_lung_masks_tf_traces_and_saved_model_round_trip(tiny, tmp_path):
    import tensorflow as tf

    from tfcxr.segment.eager_masks import segment_lungs
    from tfcxr.segment.prompts import InferenceSettings

    images = np.random.default_rng(1).random((2, 72, 60, 1), dtype=np.float32)
    eager = tf_masks.lung_masks_tf(tiny, images)  # the model's own settings: refine, 1 round
    assert eager.shape == (2, 72, 60, 1) and eager.dtype == tf.float32
    assert set(np.unique(eager.numpy())) <= {0.0, 1.0}
    reference = segment_lungs(tiny, list(images), "refine", settings=InferenceSettings(clean=False))
    agreement = np.mean(eager.numpy()[..., 0] == np.stack(reference))
    assert agreement > 0.99

    class Segmenter(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
        def __call__(self, x):
            return tf_masks.lung_masks_tf(self.model, x)

    module = Segmenter(tiny)
    traced = module(tf.constant(images))
    np.testing.assert_array_equal(traced.numpy(), eager.numpy())
    tf.saved_model.save(module, str(tmp_path / "sm"))
    restored = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_array_equal(restored(tf.constant(images)).numpy(), eager.numpy())
