"""The lung segmenter embedded in the serving graph (tfcxr.export.segmenter), on the random-weight `tiny` preset.

The exported graphs that embed it are tested in test_export_serving_module.py."""

import numpy as np
import pytest
import tensorflow as tf

from tfcxr.export.segmenter import _serving_segmenter_class, load_serving_segmenter


@pytest.fixture(scope="module")
def tiny():
    from tfcxr.segment import load_segmenter

    return load_segmenter("tiny")


def _images(count=2, height=40, width=48, seed=0):
    return np.random.default_rng(seed).random((count, height, width, 1)).astype(np.float32)


def test_serving_fn_gives_the_segmenters_own_masks_in_and_out_of_a_graph(tiny):
    from tfcxr.segment.tf_masks import lung_masks_tf

    segmenter = _serving_segmenter_class()(tiny)
    assert segmenter.settings == tiny.inference
    np.testing.assert_array_equal(segmenter.priors.numpy(), np.asarray(tiny.priors, np.float32))
    x = _images()
    masks = segmenter.serving_fn(x)
    assert masks.shape == (2, 40, 48, 1) and masks.dtype == tf.float32
    assert set(np.unique(masks.numpy())) <= {0.0, 1.0}
    np.testing.assert_array_equal(masks, lung_masks_tf(tiny, x))  # the model's own priors and settings
    traced = tf.function(segmenter.serving_fn, input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
    np.testing.assert_array_equal(traced(tf.constant(x)), masks)  # any image size, as in the serving graph


def test_only_the_segmenter_variables_are_tracked(tiny):
    segmenter = _serving_segmenter_class()(tiny)
    assert segmenter.name == "lung_segmenter"
    assert {id(v) for v in segmenter.variables} == {id(v) for v in tiny.variables}
    # What a SavedModel saves: the variables only, not the tf_keras model (saving it would trace every layer's call).
    assert list(tf.train.TrackableView(segmenter).children(segmenter)) == ["segmenter_variables"]


def test_masks_and_scores_pair_masks_with_gate_scores(tiny):
    from tfcxr.segment import gate

    rng = np.random.default_rng(0)
    features = 32 * gate.GRID * gate.GRID  # the tiny encoder's pooled features
    previous = tiny.gate
    tiny.gate = gate.fit_gate(rng.normal(0, 1, (40, features)), rng.normal(2, 1, (40, features)), components=8)
    try:
        segmenter = _serving_segmenter_class()(tiny, reject_non_cxr=True)
        assert segmenter.reject_non_cxr is True and segmenter.gate is tiny.gate
        x = _images(seed=1)
        masks, scores = segmenter.masks_and_scores(x)
        np.testing.assert_array_equal(masks, segmenter.serving_fn(x))
        assert scores.shape == (2,) and 0.0 <= float(tf.reduce_min(scores)) <= float(tf.reduce_max(scores)) <= 1.0
        expected = tiny.gate.score(tiny.embed(tiny.preprocess(tf.constant(x))[0]))
        np.testing.assert_allclose(scores, expected, atol=1e-5)
    finally:
        tiny.gate = previous


def test_rejecting_non_cxr_inputs_needs_a_gate(tiny):
    with pytest.raises(ValueError, match=f"{tiny.name} has no CXR gate, so non-CXR inputs cannot be rejected"):
        _serving_segmenter_class()(tiny, reject_non_cxr=True)
    loaded = load_serving_segmenter("tiny")
    assert loaded.reject_non_cxr is False and loaded.gate is None
    with pytest.raises(ValueError, match="has no CXR gate"):
        load_serving_segmenter("tiny", reject_non_cxr=True)
