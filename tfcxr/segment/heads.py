"""Definition heads: a second mask output of a segmenter, trained for another lung-mask definition.

Lung masks come in more than one annotation style (V7 Labs' masks keep the lung behind the heart; classic manual
Shenzhen/Montgomery masks cover the visible lung fields). A head lets one segmenter produce either without a
second image encoder: it is the mask decoder's output token path (the four mask-token embeddings and the first
output hypernetwork MLP, :data:`HEAD_PREFIXES`), retrained on the other definition while everything else stays the
segmenter's own. Masks with a head run the segmenter as usual (prompting, refine rounds), then decode the final
boxes once more through a copy of the decoder that carries the head's variables; the image embedding and the
segmenter's own masks are unchanged.

A head is stored beside the segmenter as ``head_<name>.npz`` (float16 or float32, no pickle) with its sha256 and
mask definition in ``segmenter.json`` (``heads``); :mod:`tfcxr.segment.fit_head` trains one.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np

from . import weights

# Decoder variables (``mask_decoder_weight_map`` keys) a head owns; every other decoder variable is shared.
HEAD_PREFIXES = ("mask_decoder.mask_tokens.", "mask_decoder.output_hypernetworks_mlps.0.")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def check_head_name(name: str) -> str:
    """A head name: lower-case letters, digits, ``-`` and ``_``, starting with a letter (at most 32 characters)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"a head name must match {_NAME.pattern}. Received: {name!r}")
    return name


def check_definition(definition: str, heads, source) -> None:
    """Raise ``ValueError`` naming `source` when `definition` (an ``InferenceSettings.definition``) is not one of
    `heads` (names); "" (the segmenter's own masks) always passes."""
    if definition and definition not in heads:
        raise ValueError(f"{source}: inference definition {definition!r} names no stored head "
                         f"(heads: {sorted(heads) or 'none'})")


def head_filename(name: str) -> str:
    """``head_<name>.npz``."""
    return f"head_{check_head_name(name)}.npz"


def decoder_entries(decoder):
    """``(key, tf.Variable)`` of every variable of a built ``TFSamMaskDecoder``, keyed as in ``lite_medsam.pth``."""
    from .litemedsam import mask_decoder_weight_map

    return [(key, variable) for key, variable, _ in mask_decoder_weight_map(decoder)]


def head_entries(decoder):
    """The ``(key, tf.Variable)`` pairs a head owns (:data:`HEAD_PREFIXES`)."""
    return [(key, v) for key, v in decoder_entries(decoder) if key.startswith(HEAD_PREFIXES)]


@dataclasses.dataclass
class MaskHead:
    """A trained head: its name, the mask definition it produces and its variables.

    Attributes:
        name: the head's name (:func:`check_head_name`), e.g. ``"classic"``.
        mask_definition: ``{"name", "description"}`` of the masks it produces.
        arrays: ``{key: float32 array}`` for every key of :func:`head_entries`.
    """

    name: str
    mask_definition: dict
    arrays: dict

    def __post_init__(self):
        check_head_name(self.name)

    def save(self, directory, dtype: str = "float16") -> dict:
        """Write ``directory/head_<name>.npz``; returns its ``segmenter.json`` entry (file, dtype, sha256,
        mask definition)."""
        if dtype not in ("float16", "float32"):
            raise ValueError(f"`dtype` must be 'float16' or 'float32'. Received: {dtype!r}")
        path = pathlib.Path(directory) / head_filename(self.name)
        weights.save_npz_atomic(path, {k: np.asarray(v, dtype) for k, v in self.arrays.items()})
        return {"file": path.name, "dtype": dtype, "sha256": weights.sha256_file(path),
                "mask_definition": dict(self.mask_definition)}

    @classmethod
    def load(cls, directory, name: str, entry: dict) -> "MaskHead":
        """Read the head `name` described by its ``segmenter.json`` `entry`; the file must match its sha256."""
        check_head_name(name)
        if not isinstance(entry, dict) or entry.get("file") != head_filename(name):
            raise ValueError(f"{directory}: head {name!r} must name the file {head_filename(name)!r}. "
                             f"Received: {entry!r}")
        path = pathlib.Path(directory) / entry["file"]
        weights.verify_sha256(path, str(entry.get("sha256")))
        arrays = {k: v.astype(np.float32) for k, v in weights.load_npz(path).items()}
        if not all(k.startswith(HEAD_PREFIXES) for k in arrays) or not arrays:
            raise weights.WeightsError(f"{path}: not a mask head (keys must start with {HEAD_PREFIXES})")
        definition = entry.get("mask_definition") or {"name": name, "description": "not recorded"}
        return cls(name=name, mask_definition=dict(definition), arrays=arrays)


def read_head(decoder, name: str, mask_definition: dict) -> MaskHead:
    """The head variables of a (trained) decoder as a :class:`MaskHead` (float32 copies)."""
    return MaskHead(name, dict(mask_definition), {k: v.numpy().copy() for k, v in head_entries(decoder)})


def copy_decoder(model, head: MaskHead | None = None):
    """A new ``TFSamMaskDecoder`` equal to ``model.mask_decoder``, with `head`'s variables when given.

    Args:
        model: a ``SamLungModel``.
        head: the head to load into the copy; None for an exact copy (e.g. to train a head from).

    Raises:
        WeightsError: the head's keys or shapes do not match this decoder.
    """
    import tensorflow as tf

    from .model import float32_policy

    source = model.mask_decoder
    config = model.config.sam_config() if model.kind == "litemedsam" else model.config
    with float32_policy():
        decoder = type(source)(config.mask_decoder_config, name="mask_decoder")
    grid = tf.zeros([1, source.hidden_size, model.embedding_size, model.embedding_size])
    decoder(image_embeddings=grid, image_positional_embeddings=grid, dense_prompt_embeddings=grid,
            sparse_prompt_embeddings=tf.zeros([1, 1, 2, source.hidden_size]), multimask_output=False)  # builds it
    targets = dict(decoder_entries(decoder))
    for key, variable in decoder_entries(source):
        targets[key].assign(variable)
    if head is not None:
        owned = dict(head_entries(decoder))
        if set(head.arrays) != set(owned):
            raise weights.WeightsError(f"head {head.name!r}: its variables do not match this decoder "
                                       f"(missing {sorted(set(owned) - set(head.arrays))[:3]}, "
                                       f"unexpected {sorted(set(head.arrays) - set(owned))[:3]})")
        for key, variable in owned.items():
            value = head.arrays[key]
            if tuple(value.shape) != tuple(variable.shape):
                raise weights.WeightsError(f"head {head.name!r}: {key} has shape {value.shape}, the decoder "
                                           f"expects {tuple(variable.shape)}")
            variable.assign(value)
    return decoder
