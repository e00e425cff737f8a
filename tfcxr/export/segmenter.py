"""The lung segmenter as it is embedded in the serving graph (``--embed-segmenter``).

SAM models are tf_keras and classifiers Keras 3: they never share a Keras graph. Both are tracked as
attributes of the exported ``tf.Module`` and meet at tensors inside its ``tf.function``: this wrapper exposes the
segment helper's pure-TF :func:`tfcxr.segment.prompts.lung_masks_tf` as
``serving_fn(images (batch, H, W, 1) in [0, 1]) -> float32 (batch, H, W, 1) lung mask in {0, 1}``.

In-graph masks follow the segmenter's own priors and inference settings (prompt, refine rounds, margin, threshold), as
the offline mask generator does. Unlike the offline mask cache they skip the connected-component clean-up (no core TF
op); hole filling still happens in :func:`tfcxr.masking.apply_mask`.
"""

from __future__ import annotations

from tfcxr.segment.presets import DEFAULT_PRESET


def _serving_segmenter_class():
    import tensorflow as tf

    class ServingSegmenter(tf.Module):
        """Holds a ``SamLungModel``'s variables (saved with the export), its prior boxes and inference settings.

        Only the variables are tracked, not the tf_keras layers: saving tf_keras layers would also trace and
        save each layer's own call functions, which the serving graph never uses and which cost most of the
        export time.

        Args:
            model: a ``tfcxr.segment.SamLungModel``; its ``priors`` and ``inference`` settings are embedded.
        """

        def __init__(self, model):
            super().__init__(name="lung_segmenter")
            self.segmenter_variables = list(model.variables)
            self.priors = tf.constant(model.priors, tf.float32)  # (2, 4)
            self.settings = model.inference
            # object.__setattr__ bypasses tf.Module's automatic tracking: the model is used, not saved.
            object.__setattr__(self, "_model", model)

        @tf.autograph.experimental.do_not_convert
        def serving_fn(self, images):
            """images float32 (batch, H, W, 1) in [0, 1] -> float32 (batch, H, W, 1) lung mask in {0, 1}.

            Not converted by autograph: the SAM code has no tensor-dependent Python control flow, tracing is
            faster, and tracing does not re-read the segment sources (which breaks if they change on disk).
            """
            from tfcxr.segment.prompts import lung_masks_tf

            return lung_masks_tf(self._model, images, settings=self.settings, priors=self.priors)

    return ServingSegmenter


def load_serving_segmenter(model: str = DEFAULT_PRESET):
    """Load a segmenter (a preset name such as the default ``litemedsam-lungs``, or a saved directory) for embedding."""
    from tfcxr.segment import load_segmenter

    return _serving_segmenter_class()(load_segmenter(model))
