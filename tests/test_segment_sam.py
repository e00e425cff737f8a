"""Tests for tfcxr.segment.sam: Hugging Face TFSamModel loading, the normalisation a checkpoint expects, tiny config."""

import json

import numpy as np
import pytest

from tfcxr.segment import sam


def test_normalization_from_the_preprocessor_config(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": True, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]}))
    assert sam.normalization_for(str(tmp_path)) == {"mode": "meanstd", "mean": [0.5, 0.4, 0.3],
                                                    "std": [0.2, 0.25, 0.3]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False,
                                                                   "image_mean": [0.5, 0.4, 0.3]}))
    assert sam.normalization_for(str(tmp_path)) == {"mode": "none"}
    (tmp_path / "preprocessor_config.json").write_text("{}")  # SAM's image processor defaults
    assert sam.normalization_for(str(tmp_path)) == {"mode": "meanstd", "mean": list(sam.IMAGENET_MEAN),
                                                    "std": list(sam.IMAGENET_STD)}


def test_normalization_without_a_config_depends_on_the_checkpoint_family(tmp_path, caplog):
    (tmp_path / "sam-vit-base").mkdir()
    (tmp_path / "my-MedSAM-port").mkdir()
    assert sam.normalization_for(str(tmp_path / "sam-vit-base")) == {
        "mode": "meanstd", "mean": list(sam.IMAGENET_MEAN), "std": list(sam.IMAGENET_STD)}
    assert sam.normalization_for(str(tmp_path / "my-MedSAM-port")) == {"mode": "none"}
    assert any("my-MedSAM-port: no preprocessor_config.json" in r.getMessage() for r in caplog.records)


def test_tiny_sam_config_sizes():
    config = sam.tiny_sam_config(image_size=32)
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (32, 16)
    assert config.prompt_encoder_config.image_size == 32
    assert config.vision_config.output_channels == config.prompt_encoder_config.hidden_size == \
        config.mask_decoder_config.hidden_size == 32  # the decoder reads the encoder's embedding
    assert sam.tiny_sam_config().vision_config.image_size == 64


def test_load_hf_sam_reads_a_saved_model_and_names_a_bad_source(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from transformers import TFSamModel

    from tfcxr.segment.model import float32_policy

    with float32_policy():
        model = TFSamModel(sam.tiny_sam_config(64))
        model(pixel_values=tf.zeros((1, 3, 64, 64)), input_boxes=tf.constant([[[4.0, 4.0, 30.0, 60.0]]]),
              multimask_output=False)
    model.save_pretrained(str(tmp_path / "tiny"))
    loaded = sam.load_hf_sam(str(tmp_path / "tiny"))  # tf_model.h5 present: read as TF weights
    assert loaded.config.vision_config.image_size == 64
    assert len(loaded.weights) == len(model.weights)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.weights, loaded.weights))
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match=r"empty: cannot load a TFSamModel: ") as raised:
        sam.load_hf_sam(str(tmp_path / "empty"))
    assert "hub id" not in str(raised.value)  # a local folder: no network hint
