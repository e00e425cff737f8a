"""The lung segmenter as it is embedded in the serving graph (``--embed-segmenter``).

SAM models are tf_keras and classifiers Keras 3: they never share a Keras graph. Both are tracked as
attributes of the exported ``tf.Module`` and meet at tensors inside its ``tf.function``: this wrapper exposes the
segment helper's pure-TF :func:`tfcxr.segment.tf_masks.lung_masks_tf` as
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
            model: a ``tfcxr.segment.SamLungModel``; its ``priors``, ``inference`` settings and CXR ``gate`` (if
                any) are embedded.
            reject_non_cxr: make a request fail when the gate scores an image below its threshold.
        """

        def __init__(self, model, reject_non_cxr: bool = False):
            super().__init__(name="lung_segmenter")
            if reject_non_cxr and model.gate is None:
                raise ValueError(f"{model.name} has no CXR gate, so non-CXR inputs cannot be rejected")
            self.segmenter_variables = list(model.variables)
            self.priors = tf.constant(model.priors, tf.float32)  # (2, 4)
            self.settings = model.inference
            self.reject_non_cxr = bool(reject_non_cxr)
            object.__setattr__(self, "gate", model.gate)  # numpy constants, folded into the graph
            # object.__setattr__ bypasses tf.Module's automatic tracking: the model is used, not saved.
            object.__setattr__(self, "_model", model)

        @tf.autograph.experimental.do_not_convert
        def serving_fn(self, images):
            """images float32 (batch, H, W, 1) in [0, 1] -> float32 (batch, H, W, 1) lung mask in {0, 1}.

            Not converted by autograph: the SAM code has no tensor-dependent Python control flow, tracing is
            faster, and tracing does not re-read the segment sources (which breaks if they change on disk).
            """
            from tfcxr.segment.tf_masks import lung_masks_tf

            return lung_masks_tf(self._model, images, settings=self.settings, priors=self.priors)

        @tf.autograph.experimental.do_not_convert
        def masks_and_scores(self, images):
            """images float32 (batch, H, W, 1) in [0, 1] -> (lung masks (batch, H, W, 1) in {0, 1},
            CXR gate scores float32 (batch,) in [0, 1]); needs a gate."""
            from tfcxr.segment.tf_masks import lung_masks_tf

            masks, embeddings = lung_masks_tf(self._model, images, settings=self.settings, priors=self.priors,
                                              return_embeddings=True)
            return masks, self.gate.score_tf(embeddings)

    return ServingSegmenter


def load_serving_segmenter(model: str = DEFAULT_PRESET, reject_non_cxr: bool = False):
    """Load a segmenter (a preset name such as the default ``litemedsam-lungs``, or a saved directory) for embedding.

    With ``reject_non_cxr`` the serving graph refuses images that its CXR gate scores below the threshold.
    """
    from tfcxr.segment import load_segmenter

    return _serving_segmenter_class()(load_segmenter(model), reject_non_cxr=reject_non_cxr)
