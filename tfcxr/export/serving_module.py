"""The exported ``tf.Module`` of a SavedModel (:mod:`tfcxr.export.savedmodel`): its signatures, their input specs
and output shapes, the request checks and the per-image decode -> mask -> resize.

It has two signatures:

``serving_default`` (bytes in, used by TF Serving clients)
    inputs:  ``image_bytes``  tf.string (batch,)   PNG (8/16-bit) or JPEG files, any size, gray or RGB.
             ``mask_bytes``   tf.string (batch,)   only for masked runs (``tight``/``loose``/``box``/``inverse``)
                                                   exported WITHOUT the embedded segmenter: PNG lung masks (0/255),
                                                   same size as the image.
    outputs: ``probabilities`` float32 (batch, 5)  sigmoid probabilities in ``tfcxr.labels.TARGETS`` order.
             ``no_finding``    float32 (batch,)    ``tfcxr.scoring.no_finding_score`` of the run's method.
             ``labels``        string  (batch, 5)  the TARGETS names, repeated per row. (batch, 5) rather than (5,)
                                                   so that every output shares the batch axis, which TF Serving's
                                                   REST row format (``"instances"``) requires.
             ``in_distribution`` float32 (batch,)  only with an embedded segmenter that has a CXR gate: the gate's
                                                   probability that the image is a frontal chest X-ray.
             ``is_cxr``        bool (batch,)       ``in_distribution >= `` the gate's threshold. Exported with
                                                   ``--reject-non-cxr``, a request holding an image below the
                                                   threshold fails with an error naming it instead.
    Each image is decoded, masked with the run's mask mode (the mask comes from ``mask_bytes`` or from the embedded
    segmenter), then resized to the run's ``image_size``: the order of the training pipeline
    (decode -> mask -> resize).

``predict_images`` (float in)
    inputs:  ``images`` float32 (batch, image_size, image_size, 1) in [0, 1], already masked.
    outputs: as above.

Every input and output declares its dtype and static shape (``None`` = the batch axis; S = ``image_size``):
``images`` (None, S, S, 1), ``image_bytes``/``mask_bytes`` (None,), ``probabilities`` and ``labels`` (None, 5),
``no_finding`` (None,), so TF Serving's model metadata shows what to send.

Bad requests fail with ``tf.errors.InvalidArgumentError`` naming the problem (empty batch, wrong rank or size,
bytes that are not PNG/JPEG, a mask of another size); the loaded model keeps serving the next request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tfcxr.labels import TARGETS

if TYPE_CHECKING:
    from tfcxr.export.savedmodel import RunInfo

BYTES_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "predict_images"
OUTPUT_SHAPES = {"probabilities": (None, len(TARGETS)), "no_finding": (None,), "labels": (None, len(TARGETS)),
                 "in_distribution": (None,), "is_cxr": (None,)}


def images_spec(image_size: int):
    """The ``predict_images`` input: float32 (None, image_size, image_size, 1), named ``images``."""
    import tensorflow as tf

    return tf.TensorSpec([None, int(image_size), int(image_size), 1], tf.float32, name="images")


def bytes_specs(info: RunInfo, segmenter=None) -> list:
    """The ``serving_default`` inputs: ``image_bytes`` string (None,), plus ``mask_bytes`` string (None,) when the
    run masks and no segmenter is embedded."""
    import tensorflow as tf

    specs = [tf.TensorSpec([None], tf.string, name="image_bytes")]
    if info.needs_mask and segmenter is None:
        specs.append(tf.TensorSpec([None], tf.string, name="mask_bytes"))
    return specs


def is_gated(info: RunInfo, segmenter=None) -> bool:
    """True when the served graph embeds a segmenter with a CXR gate (outputs ``in_distribution``, ``is_cxr``)."""
    return bool(info.needs_mask and segmenter is not None and getattr(segmenter, "gate", None) is not None)


def prepare_image(image_bytes, info: RunInfo, mask_bytes=None, segmenter=None, with_cxr_score: bool = False):
    """One encoded image -> the classifier input, as `tfcxr.data.pipeline` makes it: decode -> mask -> resize.

    Args:
        image_bytes: tf.string scalar, a PNG (8/16-bit) or JPEG file.
        info: the run's `RunInfo` (its `MaskSpec`: image size, mask mode, margin, fill).
        mask_bytes: tf.string scalar PNG lung mask (0/255, same size as the image); needed when the run masks
            and `segmenter` is None.
        segmenter: optional object with ``serving_fn(images (1, H, W, 1)) -> masks (1, H, W, 1) in {0, 1}``.
        with_cxr_score: also return the segmenter's CXR gate score (its ``masks_and_scores``).

    Returns:
        float32 (image_size, image_size, 1) in [0, 1] (and the float32 scalar gate score in [0, 1]).
    """
    import tensorflow as tf

    from tfcxr.data.io import decode_image_tf
    from tfcxr.data.image_ops import resize_to_training

    image = decode_image_tf(image_bytes)  # (H, W, 1)
    score = None
    if info.needs_mask:
        if segmenter is not None and with_cxr_score:
            masks, scores = segmenter.masks_and_scores(image[tf.newaxis])
            lung, score = masks[0] > 0.5, scores[0]  # (H, W, 1), ()
        elif segmenter is not None:
            lung = segmenter.serving_fn(image[tf.newaxis])[0] > 0.5  # (H, W, 1)
        elif mask_bytes is None:
            raise ValueError(f"{info.rundir}: the run uses mask={info.mask!r}; a lung mask is required")
        else:
            lung = decode_image_tf(mask_bytes)  # (H, W, 1)
            same_size = tf.debugging.Assert(
                tf.reduce_all(tf.equal(tf.shape(lung)[:2], tf.shape(image)[:2])),
                ["`mask_bytes` must have the size of its image; image", tf.shape(image), "mask", tf.shape(lung)],
            )
            with tf.control_dependencies([same_size]):
                lung = lung > 0.5  # the pipeline's `uint8 > 127`
        image = info.mask_spec.apply_at_source(image, lung)  # the run's MaskSpec, at source resolution
    # The training pipeline's resize (aspect-preserving, antialiased, padded), reused as is.
    resized = resize_to_training(image, info.mask_spec.image_size)  # (S, S, 1)
    return (resized, score) if with_cxr_score else resized


def prepare_batch(image_bytes, info: RunInfo, mask_bytes=None, segmenter=None, with_cxr_score: bool = False):
    """A batch of encoded images -> the classifier inputs, one :func:`prepare_image` per image.

    Refuses an empty batch, and a `mask_bytes` batch whose length differs from `image_bytes`.

    Args:
        image_bytes: tf.string (batch,) PNG or JPEG files.
        info: the run's `RunInfo`.
        mask_bytes: optional tf.string (batch,) PNG lung masks, one per image.
        segmenter: optional embedded segmenter (see :func:`prepare_image`).
        with_cxr_score: also return the gate scores (needs a segmenter with a gate).

    Returns:
        float32 (batch, image_size, image_size, 1) in [0, 1] (and float32 (batch,) gate scores in [0, 1]).
    """
    import tensorflow as tf

    size = info.image_size
    image_spec = tf.TensorSpec([size, size, 1], tf.float32)

    def prepare(encoded):
        return prepare_image(encoded, info, segmenter=segmenter, with_cxr_score=with_cxr_score)

    def prepare_pair(pair):
        return prepare_image(pair[0], info, mask_bytes=pair[1], segmenter=segmenter)

    check = tf.debugging.assert_positive(tf.size(image_bytes), message="empty batch: `image_bytes` is empty")
    with tf.control_dependencies([check]):
        if with_cxr_score:
            return tf.map_fn(prepare, image_bytes, fn_output_signature=(image_spec, tf.TensorSpec([], tf.float32)))
        if mask_bytes is None:
            return tf.map_fn(prepare, image_bytes, fn_output_signature=image_spec)
        same = tf.debugging.assert_equal(
            tf.size(mask_bytes), tf.size(image_bytes),
            message="`mask_bytes` must hold one mask per image in `image_bytes`",
        )
        with tf.control_dependencies([same]):
            # (batch, S, S, 1)
            return tf.map_fn(prepare_pair, (image_bytes, mask_bytes), fn_output_signature=image_spec)


def checked_images(images, image_size: int):
    """The ``predict_images`` input, refused with a message unless float32 (batch >= 1, S, S, 1).

    The declared (None, S, S, 1) is metadata: a loaded signature and TF Serving still feed any shape, so the request
    is checked here. Returns `images` with the static shape (None, S, S, 1).
    """
    import tensorflow as tf

    expected = f"(batch, {image_size}, {image_size}, 1) float32 in [0, 1]"
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[:4]  # safe for any rank
    well_formed = tf.logical_and(
        tf.equal(tf.size(shape), 4), tf.reduce_all(tf.equal(padded[1:], [image_size, image_size, 1]))
    )
    checks = [tf.debugging.Assert(well_formed, [f"`images` must be {expected}; received shape", shape], summarize=8)]
    with tf.control_dependencies(checks):
        checks.append(tf.debugging.assert_positive(padded[0], message="empty batch: `images` holds no image"))
    with tf.control_dependencies(checks):
        return tf.ensure_shape(tf.identity(images), [None, image_size, image_size, 1])


def classifier_outputs(classifier, images, no_finding_method: str) -> dict:
    """The outputs every signature shares, for float32 (batch, S, S, 1) classifier inputs in [0, 1].

    Returns:
        ``probabilities`` float32 (batch, 5) in [0, 1], ``no_finding`` float32 (batch,) (`tfcxr.scoring`
        ``no_finding_score`` with `no_finding_method`) and ``labels`` string (batch, 5), the TARGETS per row.
    """
    import tensorflow as tf

    from tfcxr.scoring import no_finding_score

    probabilities = tf.cast(classifier(images, training=False), tf.float32)  # (batch, 5)
    probabilities = tf.ensure_shape(probabilities, OUTPUT_SHAPES["probabilities"])
    batch = tf.shape(probabilities)[0]
    labels = tf.tile(tf.constant(TARGETS)[tf.newaxis], [batch, 1])  # (batch, 5)
    no_finding = no_finding_score(probabilities, method=no_finding_method)  # (batch,)
    return {
        "probabilities": probabilities,
        "no_finding": tf.ensure_shape(no_finding, OUTPUT_SHAPES["no_finding"]),
        "labels": tf.ensure_shape(labels, OUTPUT_SHAPES["labels"]),
    }


def gate_outputs(outputs: dict, scores, segmenter) -> dict:
    """Add the gate's ``in_distribution`` (float32 (batch,) `scores` in [0, 1]) and ``is_cxr`` (bool (batch,))
    outputs to `outputs`; with the segmenter's ``reject_non_cxr`` a batch holding a non-CXR image fails instead."""
    import tensorflow as tf

    threshold = float(segmenter.gate.threshold)
    is_cxr = scores >= threshold
    if segmenter.reject_non_cxr:
        check = tf.debugging.Assert(tf.reduce_all(is_cxr), [
            "not a frontal chest X-ray (CXR gate score below", threshold,
            "): images at batch positions", tf.where(tf.logical_not(is_cxr))[:, 0], "scores", scores],
            summarize=16)
        with tf.control_dependencies([check]):
            scores = tf.identity(scores)
    outputs["in_distribution"] = tf.ensure_shape(scores, OUTPUT_SHAPES["in_distribution"])
    outputs["is_cxr"] = tf.ensure_shape(is_cxr, OUTPUT_SHAPES["is_cxr"])
    return outputs


def _serving_module_class():
    import tensorflow as tf

    class ServingModule(tf.Module):
        """The exported graph. Attributes are tracked, so their variables are saved with it.

        Args:
            classifier: Keras 3 model, float32 (batch, S, S, 1) in [0, 1] -> (batch, 5) probabilities.
            info: the run's `RunInfo` (image size, mask mode, margin, fill, No Finding method).
            segmenter: optional object whose ``serving_fn(images (batch, H, W, 1) in [0, 1])`` returns
                float32 lung masks (batch, H, W, 1) in {0, 1}; makes ``mask_bytes`` unnecessary.
        """

        def __init__(self, classifier, info: RunInfo, segmenter=None):
            super().__init__(name="tfcxr_classifier")
            self.classifier = classifier
            self.segmenter = segmenter
            self._info = info
            self.predict_images = tf.function(self._predict_images, input_signature=[images_spec(info.image_size)])
            self.serve_bytes = tf.function(self._serve_bytes, input_signature=bytes_specs(info, segmenter))
            self.gated = is_gated(info, segmenter)

        def _predict_images(self, images):
            images = checked_images(images, self._info.image_size)
            return classifier_outputs(self.classifier, images, self._info.no_finding_method)

        def _serve_bytes(self, image_bytes, mask_bytes=None):
            info = self._info
            segmenter = self.segmenter if info.needs_mask else None
            if self.gated:
                images, scores = prepare_batch(image_bytes, info, segmenter=segmenter, with_cxr_score=True)
                return gate_outputs(classifier_outputs(self.classifier, images, info.no_finding_method), scores,
                                    self.segmenter)
            images = prepare_batch(image_bytes, info, mask_bytes, segmenter=segmenter)
            return classifier_outputs(self.classifier, images, info.no_finding_method)

        def signatures(self):
            """{signature name: concrete function} to pass to ``tf.saved_model.save``."""
            return {
                BYTES_SIGNATURE: self.serve_bytes.get_concrete_function(),
                IMAGES_SIGNATURE: self.predict_images.get_concrete_function(),
            }

    return ServingModule


def build_serving_module(classifier, info: RunInfo, segmenter=None):
    """The `tf.Module` that is saved (see the module docstring for its signatures).

    Args:
        classifier: Keras 3 model, float32 (batch, S, S, 1) in [0, 1] -> (batch, 5) probabilities.
        info: the run's `RunInfo`.
        segmenter: optional embedded lung segmenter (``tfcxr.export.segmenter.load_serving_segmenter``).
    """
    if info.needs_mask is False and segmenter is not None:
        raise ValueError(
            f"{info.rundir}: the run uses mask='original', so there is nothing to segment; drop --embed-segmenter"
        )
    return _serving_module_class()(classifier, info, segmenter=segmenter)
