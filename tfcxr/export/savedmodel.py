"""Export a training run as a SavedModel for TF Serving.

The exported ``tf.Module`` has two signatures:

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

import dataclasses
import json
import logging
import pathlib
import shutil

from tfcxr.export import serving_layout
from tfcxr.labels import TARGETS
from tfcxr.masking import MaskSpec, mask_spec_properties

logger = logging.getLogger(__name__)

BYTES_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "predict_images"
EXPORT_INFO = "assets.extra/tfcxr_export.json"
OUTPUT_SHAPES = {"probabilities": (None, len(TARGETS)), "no_finding": (None,), "labels": (None, len(TARGETS)),
                 "in_distribution": (None,), "is_cxr": (None,)}


@mask_spec_properties
@dataclasses.dataclass
class RunInfo:
    """What export needs from a run directory (its config and model, `tfcxr.rundir.RunDir`).

    Attributes:
        rundir, model_path: the run directory and its model file.
        mask_spec: the run's `tfcxr.masking.MaskSpec` (mode, margin, fill, image size), as trained.
        backbone: copied into the export metadata.
        no_finding_method: the run's config `no_finding_score` (`tfcxr.scoring`), served as ``no_finding`` and
            copied into the export metadata.
        image_size, mask, margin, fill: init-only shorthands for `mask_spec` fields (mode defaults
            to `original`); read back as properties of `mask_spec`.
    """

    rundir: pathlib.Path
    model_path: pathlib.Path
    mask_spec: MaskSpec = None
    backbone: str = "unknown"
    no_finding_method: str = "max"
    image_size: dataclasses.InitVar[int] = None
    mask: dataclasses.InitVar[str] = None
    margin: dataclasses.InitVar[object] = None
    fill: dataclasses.InitVar[str] = None

    def __post_init__(self, image_size, mask, margin, fill):
        if self.mask_spec is None and image_size is None:
            raise ValueError("RunInfo needs `mask_spec` or `image_size`. Received neither")
        default = MaskSpec(mode="original", image_size=image_size) if self.mask_spec is None else None
        self.mask_spec = MaskSpec.resolve(self.mask_spec, default, mode=mask, margin=margin, fill=fill,
                                          image_size=image_size)

    @property
    def needs_mask(self) -> bool:
        return self.mask_spec.needs_mask

    def metadata(self) -> dict:
        """JSON-able description stored beside every exported artefact.

        ``mask_spec`` is the spec itself (`MaskSpec.from_dict` reads it back); the flat
        ``image_size``/``mask``/``margin``/``fill`` keys repeat it for older readers.
        """
        return {
            "run": str(self.rundir),
            "backbone": self.backbone,
            **self.mask_spec.to_flat(),
            "mask_spec": self.mask_spec.to_dict(),
            "no_finding_method": self.no_finding_method,
            "labels": list(TARGETS),
        }


def read_run(rundir) -> RunInfo:
    """Read a run directory's config (flat or one level of sections; masking flat or as ``mask_spec:``) and
    locate its model, through `tfcxr.rundir.RunDir`.

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: naming the config file and the bad or missing field.
    """
    from tfcxr.rundir import RunDir

    run = RunDir(rundir)
    for path in (run.config_path, run.model_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; expected a run directory written by `python -m tfcxr.train`")
    image_size = run.setting("image_size")
    if image_size is None:
        raise ValueError(f"{run.config_path}: missing required field `image_size`")
    try:
        return RunInfo(
            rundir=run.path,
            model_path=run.model_path,
            mask_spec=run.mask_spec(default=MaskSpec(mode="original", image_size=image_size)),
            backbone=str(run.setting("backbone", "unknown")),
            no_finding_method=run.no_finding_score,
        )
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith(str(run.config_path)) else f"{run.config_path}: {message}") from None


def to_float32(model):
    """Return `model` with every layer computing in float32 (a copy when the model used mixed precision).

    Serving on CPU, ONNX and TensorRT builds want a float32 graph; TensorRT applies FP16 itself.
    """
    import keras

    if all(layer.dtype_policy.compute_dtype == "float32" for layer in _all_layers(model)):
        return model

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def load_classifier(info: RunInfo):
    """Load the run's model (custom tfcxr layers registered by importing `tfcxr.models`) as a float32 model."""
    import keras

    import tfcxr.models  # noqa: F401  (registers the custom layers for deserialisation)

    model = keras.models.load_model(info.model_path, compile=False)
    return to_float32(model)


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


def _serving_module_class():
    import tensorflow as tf

    from tfcxr.scoring import no_finding_score

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
            size = info.image_size
            self.predict_images = tf.function(self._predict_images, input_signature=[images_spec(size)])
            self.serve_bytes = tf.function(self._serve_bytes, input_signature=bytes_specs(info, segmenter))
            self._image_spec = tf.TensorSpec([size, size, 1], tf.float32)
            self._gated = info.needs_mask and segmenter is not None and getattr(segmenter, "gate", None) is not None

        def _outputs(self, images):
            probabilities = tf.cast(self.classifier(images, training=False), tf.float32)  # (batch, 5)
            probabilities = tf.ensure_shape(probabilities, OUTPUT_SHAPES["probabilities"])
            batch = tf.shape(probabilities)[0]
            labels = tf.tile(tf.constant(TARGETS)[tf.newaxis], [batch, 1])  # (batch, 5)
            no_finding = no_finding_score(probabilities, method=self._info.no_finding_method)  # (batch,)
            return {
                "probabilities": probabilities,
                "no_finding": tf.ensure_shape(no_finding, OUTPUT_SHAPES["no_finding"]),
                "labels": tf.ensure_shape(labels, OUTPUT_SHAPES["labels"]),
            }

        def _predict_images(self, images):
            size = self._info.image_size
            expected = f"(batch, {size}, {size}, 1) float32 in [0, 1]"
            # The declared (None, S, S, 1) is metadata: a loaded signature and TF Serving still feed any shape,
            # so the request is checked here and refused with a message.
            shape = tf.shape(images)
            padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[:4]  # safe for any rank
            well_formed = tf.logical_and(
                tf.equal(tf.size(shape), 4), tf.reduce_all(tf.equal(padded[1:], [size, size, 1]))
            )
            checks = [tf.debugging.Assert(well_formed, [f"`images` must be {expected}; received shape", shape], summarize=8)]
            with tf.control_dependencies(checks):
                checks.append(tf.debugging.assert_positive(padded[0], message="empty batch: `images` holds no image"))
            with tf.control_dependencies(checks):
                images = tf.ensure_shape(tf.identity(images), [None, size, size, 1])
            return self._outputs(images)

        def _prepare(self, image_bytes, mask_bytes=None):
            info = self._info
            return prepare_image(
                image_bytes, info, mask_bytes=mask_bytes, segmenter=self.segmenter if info.needs_mask else None,
                with_cxr_score=self._gated,
            )

        def _gate_outputs(self, outputs, scores):
            """Add the gate's ``in_distribution`` and ``is_cxr`` outputs; refuse non-CXR images if asked to."""
            is_cxr = scores >= float(self.segmenter.gate.threshold)
            if self.segmenter.reject_non_cxr:
                check = tf.debugging.Assert(tf.reduce_all(is_cxr), [
                    "not a frontal chest X-ray (CXR gate score below", float(self.segmenter.gate.threshold),
                    "): images at batch positions", tf.where(tf.logical_not(is_cxr))[:, 0], "scores", scores],
                    summarize=16)
                with tf.control_dependencies([check]):
                    scores = tf.identity(scores)
            outputs["in_distribution"] = tf.ensure_shape(scores, OUTPUT_SHAPES["in_distribution"])
            outputs["is_cxr"] = tf.ensure_shape(is_cxr, OUTPUT_SHAPES["is_cxr"])
            return outputs

        def _serve_bytes(self, image_bytes, mask_bytes=None):
            check = tf.debugging.assert_positive(tf.size(image_bytes), message="empty batch: `image_bytes` is empty")
            with tf.control_dependencies([check]):
                if self._gated:
                    images, scores = tf.map_fn(self._prepare, image_bytes, fn_output_signature=(
                        self._image_spec, tf.TensorSpec([], tf.float32)))
                    return self._gate_outputs(self._outputs(images), scores)
                if mask_bytes is None:
                    images = tf.map_fn(self._prepare, image_bytes, fn_output_signature=self._image_spec)
                else:
                    same = tf.debugging.assert_equal(
                        tf.size(mask_bytes), tf.size(image_bytes),
                        message="`mask_bytes` must hold one mask per image in `image_bytes`",
                    )
                    with tf.control_dependencies([same]):
                        images = tf.map_fn(
                            lambda pair: self._prepare(*pair),
                            (image_bytes, mask_bytes),
                            fn_output_signature=self._image_spec,
                        )  # (batch, S, S, 1)
            return self._outputs(images)

        def signatures(self):
            return {
                BYTES_SIGNATURE: self.serve_bytes.get_concrete_function(),
                IMAGES_SIGNATURE: self.predict_images.get_concrete_function(),
            }

    return ServingModule


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
    from tfcxr.data.pipeline import resize_to_training

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


def build_serving_module(classifier, info: RunInfo, segmenter=None):
    """The `tf.Module` that is saved (see module docstring for its signatures)."""
    if info.needs_mask is False and segmenter is not None:
        raise ValueError(
            f"{info.rundir}: the run uses mask='original', so there is nothing to segment; drop --embed-segmenter"
        )
    return _serving_module_class()(classifier, info, segmenter=segmenter)


def export_savedmodel(
    rundir,
    out_dir,
    model_name: str = "tfcxr",
    version: int | None = None,
    segmenter=None,
) -> pathlib.Path:
    """Export ``RUNDIR`` to ``<out_dir>/<model_name>/<version>/`` and regenerate ``<out_dir>/models.config``.

    Args:
        rundir: a run directory written by `python -m tfcxr.train` (`tfcxr.rundir.RunDir`).
        out_dir: the TF Serving model base folder (mounted as ``/models`` by ``export/docker-compose.yml``).
        model_name: TF Serving model name.
        version: positive int; default 1 + the highest existing version.
        segmenter: optional lung segmenter with a ``serving_fn`` to embed (see `ServingModule`).

    Returns:
        the version folder.
    """
    import tensorflow as tf

    info = read_run(rundir)
    version = serving_layout.resolve_version(out_dir, model_name, version)
    module = build_serving_module(load_classifier(info), info, segmenter=segmenter)
    staging = serving_layout.staging_dir(out_dir, model_name, version)
    try:
        tf.saved_model.save(module, str(staging), signatures=module.signatures())
        metadata = dict(info.metadata(), embed_segmenter=segmenter is not None, version=version)
        if module._gated:
            metadata["cxr_gate"] = {"threshold": float(segmenter.gate.threshold),
                                    "reject_non_cxr": segmenter.reject_non_cxr,
                                    "outputs": ["in_distribution", "is_cxr"]}
        metadata["signatures"] = {
            BYTES_SIGNATURE: ["image_bytes"] + (["mask_bytes"] if info.needs_mask and segmenter is None else []),
            IMAGES_SIGNATURE: ["images"],
        }
        (staging / EXPORT_INFO).parent.mkdir(parents=True, exist_ok=True)
        (staging / EXPORT_INFO).write_text(json.dumps(metadata, indent=2) + "\n")
        target = serving_layout.publish_version(staging, out_dir, model_name, version)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("Wrote SavedModel %s (signatures %s, %s)", target, BYTES_SIGNATURE, IMAGES_SIGNATURE)
    return target


def read_export_info(version_dir) -> dict:
    """The JSON metadata written beside an exported SavedModel (mask mode, image size, labels, signatures)."""
    path = pathlib.Path(version_dir) / EXPORT_INFO
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {version_dir} a tfcxr export?")
    return json.loads(path.read_text())


def run_savedmodel(version_dir, images=None, image_bytes=None, mask_bytes=None) -> dict:
    """Load an exported version folder and call one signature; returns {output name: np.ndarray}.

    Args:
        images: float32 (batch, S, S, 1) in [0, 1] -> ``predict_images``; or
        image_bytes / mask_bytes: lists of encoded files -> ``serving_default``.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    if images is not None:
        outputs = loaded.signatures[IMAGES_SIGNATURE](images=tf.constant(images, tf.float32))
    else:
        inputs = {"image_bytes": tf.constant(list(image_bytes), tf.string)}
        if mask_bytes is not None:
            inputs["mask_bytes"] = tf.constant(list(mask_bytes), tf.string)
        outputs = loaded.signatures[BYTES_SIGNATURE](**inputs)
    return {name: value.numpy() for name, value in outputs.items()}
