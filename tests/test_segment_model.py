"""Fast tests of ``tfcxr.segment.model.SamLungModel``'s interface on tiny random configs (no real weights needed)."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from segment_model_helpers import BOXES, random_image  # noqa: E402

from tfcxr.segment import load_segmenter  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return load_segmenter("tiny")


def test_a_random_model_has_the_same_weights_whatever_ran_before(tiny):
    import random

    from tfcxr.segment.weights import export_weights

    random.seed(123)  # as `keras.utils.set_random_seed` in a test that ran before would
    state = random.getstate()
    rebuilt = load_segmenter("tiny")
    assert random.getstate() == state  # the caller's random stream goes on as it was
    random.seed(7)
    first, second = export_weights(tiny.weight_map()), export_weights(rebuilt.weight_map())
    assert all(np.array_equal(first[k], second[k]) for k in first)


def test_tiny_shapes_and_sizes(tiny):
    assert (tiny.image_size, tiny.embedding_size, tiny.kind) == (64, 16, "litemedsam")
    pixel_values, sizes = tiny.preprocess(np.stack([random_image(50, 40), random_image(50, 40, 1)]))
    assert pixel_values.shape == (2, 64, 64, 3) and pixel_values.dtype == tf.float32
    np.testing.assert_array_equal(sizes.numpy(), [[50, 40, 64, 51]] * 2)
    # resized region min-max normalised to [0, 1], padding (right of column 51) is zero
    assert float(tf.reduce_min(pixel_values[:, :, :51])) == 0.0 and float(tf.reduce_max(pixel_values)) == 1.0
    assert float(tf.reduce_max(tf.abs(pixel_values[:, :, 51:]))) == 0.0
    embeddings = tiny.embed(pixel_values)
    assert embeddings.shape == (2, 32, 16, 16)
    logits = tiny.decode(embeddings, np.repeat(BOXES, 2, axis=0))
    assert logits.shape == (2, 2, 64, 64) and logits.dtype == tf.float32
    assert tiny.postprocess(logits, sizes).shape == (2, 2, 50, 40)
    np.testing.assert_allclose(tiny(pixel_values, np.repeat(BOXES, 2, axis=0)).numpy(), logits.numpy(), atol=1e-5)


def test_preprocess_list_of_sizes(tiny):
    pixel_values, sizes = tiny.preprocess([random_image(32, 64), random_image(80, 20)])
    assert pixel_values.shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(sizes.numpy(), [[32, 64, 32, 64], [80, 20, 64, 16]])
    with pytest.raises(ValueError, match="images"):
        tiny.preprocess(np.zeros((2, 3), np.float32))


def test_postprocess_maps_padded_input_back_to_the_original(tiny):
    """A non-square image, preprocessed (resize + pad), read back as 'logits', returns to its own size."""
    h, w = 48, 80
    yy, xx = np.mgrid[0:h, 0:w]
    image = ((xx < w // 3) | (yy > 2 * h // 3)).astype(np.float32)[..., None]  # (48, 80, 1) in {0, 1}
    pixel_values, sizes = tiny.preprocess(image[None])
    np.testing.assert_array_equal(sizes.numpy(), [[48, 80, 38, 64]])
    logits = pixel_values[..., :1] * 2.0 - 1.0  # (1, 64, 64, 1): +1 on the pattern, -1 elsewhere and in padding
    back = tiny.postprocess(tf.transpose(logits, (0, 3, 1, 2)), sizes).numpy()[0, 0]
    assert back.shape == (h, w)
    assert np.mean((back > 0) == (image[..., 0] > 0.5)) > 0.97


def test_normalized_and_original_boxes(tiny):
    _, sizes = tiny.preprocess(random_image(50, 100)[None])  # resized to (32, 64)
    norm = tiny.normalized_to_input_boxes([[[0.0, 0.0, 1.0, 0.5]]], sizes).numpy()
    np.testing.assert_allclose(norm, [[[0, 0, 64, 16]]])
    orig = tiny.original_to_input_boxes([[[10.0, 10.0, 100.0, 50.0]]], sizes).numpy()
    np.testing.assert_allclose(orig, [[[6.4, 6.4, 64, 32]]], rtol=1e-6)


def test_tf_function_pipeline_matches_eager(tiny):
    images = np.stack([random_image(40, 56, 2), random_image(40, 56, 3)])

    def pipeline(images):
        pixel_values, sizes = tiny.preprocess(images)
        norm = tf.tile(tf.constant([[[0.1, 0.1, 0.45, 0.9], [0.55, 0.1, 0.9, 0.9]]]), [tf.shape(images)[0], 1, 1])
        logits = tiny.decode(tiny.embed(pixel_values), tiny.normalized_to_input_boxes(norm, sizes))
        return tiny.postprocess(logits, sizes)

    graph = tf.function(pipeline, input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
    out = graph(images)
    assert out.shape == (2, 2, 40, 56)
    np.testing.assert_allclose(out.numpy(), pipeline(images).numpy(), atol=1e-4)



def test_predict_contract(tiny):
    images = [random_image(40, 56), random_image(64, 48, 1)]
    for prompt in ("prior", [np.asarray([[2.0, 2.0, 20.0, 30.0]]), np.asarray([[0, 0, 47, 63], [5, 5, 20, 20]])]):
        masks = tiny.predict(images, prompt=prompt)
        assert [m.shape for m in masks] == [(40, 56), (64, 48)] and all(m.dtype == bool for m in masks)
    with pytest.raises(ValueError, match="one \\(B, 4\\) box array per image"):
        tiny.predict(images, prompt=[np.zeros((1, 4))])
    with pytest.raises(ValueError, match="prompt"):
        tiny.predict(images, prompt="lungs")


def test_gradients_reach_decoder_and_encoder(tiny):
    pixel_values, _ = tiny.preprocess(random_image(64, 64)[None])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sigmoid(tiny(pixel_values, BOXES, training=True)))
    variables = tiny.mask_decoder.trainable_variables + tiny.image_encoder.trainable_variables
    grads = tape.gradient(loss, variables)
    # only the IoU head is unused with multimask_output=False
    assert {v.name for v, g in zip(variables, grads) if g is None} == {
        v.name for v in tiny.mask_decoder.iou_prediction_head.trainable_variables}
    assert len(tiny.prompt_encoder.trainable_variables) > 0
    assert not any(v is w for v in tiny.mask_decoder.trainable_variables for w in tiny.prompt_encoder.variables)


def test_stays_float32_under_mixed_precision():
    import tf_keras

    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = load_segmenter("litemedsam-tiny")
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    assert all(v.dtype == tf.float32 for v in model.variables)
    pixel_values, _ = model.preprocess(random_image(64, 64)[None])
    assert model(pixel_values, BOXES).dtype == tf.float32

