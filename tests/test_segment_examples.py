"""Tests for tfcxr.segment.examples: per-lung boxes, prior boxes and labels in the logit frame (tiny model)."""

import numpy as np

from segment_fakes import write_pairs
from tfcxr.data.pairs import load_pairs
from tfcxr.segment import examples


def test_prepare_examples_boxes_labels_and_priors(tmp_path):
    from tfcxr.segment import load_segmenter
    from tfcxr.segment.tf_masks import input_boxes

    model = load_segmenter("tiny")
    pairs = load_pairs(str(write_pairs(tmp_path / "pairs", count=2)))
    priors = np.asarray([[0.1, 0.2, 0.45, 0.8], [0.55, 0.2, 0.9, 0.8]], np.float32)
    built = examples.prepare_examples(model, pairs, 32, priors)
    sizes = model.preprocess(pairs[0].image[None])[1]
    np.testing.assert_allclose(built["prior_boxes"][0], np.asarray(input_boxes(model, priors[None], sizes))[0])
    assert built["boxes"].shape == built["prior_boxes"].shape == (2, 2, 4)
    left, right = built["boxes"][0]
    assert left[2] < right[0]  # one box per lung, image-left first, matching the prior order
    labels = built["labels"]
    assert labels.shape == (2, 2, 32, 32) and labels[0, 0].any() and labels[0, 1].any()
    assert not (labels[0, 0] & labels[0, 1]).any()  # each box's label is its own lung
    np.testing.assert_array_equal(built["union"], labels.max(axis=1))



def test_to_label_frame_fills_the_top_left_corner():
    mask = np.ones((20, 10), bool)
    label = examples.to_label_frame(mask, (8, 4), 16)
    assert label.shape == (16, 16) and label.dtype == np.uint8
    assert label[:8, :4].all() and not label[8:].any() and not label[:, 4:].any()
