"""Export a training run as a SavedModel for TF Serving, and load and call an exported version.

:func:`export_savedmodel` reads the run (:class:`RunInfo`, :func:`read_run`), loads its classifier as float32,
saves the ``tf.Module`` of :mod:`tfcxr.export.serving_module` (signatures ``serving_default``, bytes in, and
``predict_images``, floats in; documented there) into the TF Serving layout of :mod:`tfcxr.export.serving_layout`,
and writes the run's metadata beside it (``assets.extra/tfcxr_export.json``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil

from tfcxr.export import serving_layout
from tfcxr.export.serving_module import BYTES_SIGNATURE, IMAGES_SIGNATURE, build_serving_module
from tfcxr.labels import TARGETS
from tfcxr.mask_spec import MaskSpec, mask_spec_properties

logger = logging.getLogger(__name__)

EXPORT_INFO = "assets.extra/tfcxr_export.json"


@mask_spec_properties
@dataclasses.dataclass
class RunInfo:
    """What export needs from a run directory (its config and model, `tfcxr.rundir.RunDir`).

    Attributes:
        rundir, model_path: the run directory and its model file.
        mask_spec: the run's `tfcxr.mask_spec.MaskSpec` (mode, margin, fill, image size), as trained.
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


def _export_metadata(info: RunInfo, segmenter=None, version: int | None = None, gated: bool = False) -> dict:
    """The JSON written beside an export (:data:`EXPORT_INFO`): the run's :meth:`RunInfo.metadata`, whether a
    segmenter is embedded, the version, the CXR gate (when `gated`) and each signature's input names."""
    metadata = dict(info.metadata(), embed_segmenter=segmenter is not None, version=version)
    if gated:
        metadata["cxr_gate"] = {"threshold": float(segmenter.gate.threshold),
                                "reject_non_cxr": segmenter.reject_non_cxr,
                                "outputs": ["in_distribution", "is_cxr"]}
    metadata["signatures"] = {
        BYTES_SIGNATURE: ["image_bytes"] + (["mask_bytes"] if info.needs_mask and segmenter is None else []),
        IMAGES_SIGNATURE: ["images"],
    }
    return metadata


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
        segmenter: optional lung segmenter with a ``serving_fn`` to embed (see
            :func:`tfcxr.export.serving_module.build_serving_module`).

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
        metadata = _export_metadata(info, segmenter, version, gated=module.gated)
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
