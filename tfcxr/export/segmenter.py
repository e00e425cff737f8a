"""The lung segmenter as it is embedded in the serving graph (``--embed-segmenter``).

SAM models are tf_keras and classifiers Keras 3 (DESIGN.md §2): they never share a Keras graph. Both are tracked as
attributes of the exported ``tf.Module`` and meet at tensors inside its ``tf.function``: this wrapper exposes the
segment helper's pure-TF :func:`tfcxr.segment.prompts.lung_masks_tf` as
``serving_fn(images (batch, H, W, 1) in [0, 1]) -> float32 (batch, H, W, 1) lung mask in {0, 1}``.

In-graph masks use the prior boxes plus `refine_rounds` re-prompts. Unlike the offline mask cache they skip the
connected-component clean-up (no core TF op); hole filling still happens in :func:`tfcxr.masking.apply_mask`.
"""

from __future__ import annotations

import pathlib


def _serving_segmenter_class():
    import tensorflow as tf

    class ServingSegmenter(tf.Module):
        """Holds a ``SamLungModel``'s variables (saved with the export) and its prior boxes.

        Only the variables are tracked, not the tf_keras layers: saving tf_keras layers would also trace and
        save each layer's own call functions, which the serving graph never uses and which cost most of the
        export time.

        Args:
            model: a ``tfcxr.segment.SamLungModel``.
            priors: float32 (2, 4) normalised xyxy prior boxes (one per lung).
            refine_rounds: 0 (prior boxes only) or 1-2 refinement rounds.
        """

        def __init__(self, model, priors, refine_rounds: int = 1):
            super().__init__(name="lung_segmenter")
            self.segmenter_variables = list(model.variables)
            self.priors = tf.constant(priors, tf.float32)  # (2, 4)
            self.refine_rounds = int(refine_rounds)
            # object.__setattr__ bypasses tf.Module's automatic tracking: the model is used, not saved.
            object.__setattr__(self, "_model", model)

        @tf.autograph.experimental.do_not_convert
        def serving_fn(self, images):
            """images float32 (batch, H, W, 1) in [0, 1] -> float32 (batch, H, W, 1) lung mask in {0, 1}.

            Not converted by autograph: the SAM code has no tensor-dependent Python control flow, tracing is
            faster, and tracing does not re-read the segment sources (which breaks if they change on disk).
            """
            from tfcxr.segment.prompts import lung_masks_tf

            return lung_masks_tf(self._model, images, priors=self.priors, refine_rounds=self.refine_rounds)

    return ServingSegmenter


def load_serving_segmenter(model: str = "litemedsam", refine_rounds: int = 1):
    """Load a segmenter (``"litemedsam"``, ``"tiny"`` or a saved/fine-tuned directory) for embedding.

    The prior boxes come from ``<model dir>/lung_priors.json`` when the directory has one, else the defaults.
    """
    from tfcxr.segment import load_segmenter
    from tfcxr.segment.prompts import load_priors

    path = pathlib.Path(model)
    priors = load_priors(path if path.is_dir() else None)
    return _serving_segmenter_class()(load_segmenter(model), priors, refine_rounds=refine_rounds)
