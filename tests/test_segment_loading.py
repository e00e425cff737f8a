"""Tests of ``tfcxr.segment.loading.load_segmenter``: Hugging Face model folders, saved ViT SAM, and load errors."""

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from segment_model_helpers import BOXES, random_image  # noqa: E402

from tfcxr.segment import load_segmenter  # noqa: E402
from tfcxr.segment.segmenter_format import save_segmenter  # noqa: E402


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory):
    from transformers import TFSamModel

    from tfcxr.segment.model import float32_policy
    from tfcxr.segment.sam import tiny_sam_config

    directory = tmp_path_factory.mktemp("tiny_sam")
    with float32_policy():
        hf = TFSamModel(tiny_sam_config(64))
        hf(pixel_values=tf.zeros((1, 3, 64, 64)), input_boxes=tf.constant(BOXES), multimask_output=False)
    hf.save_pretrained(str(directory))
    return directory


def test_hf_from_pretrained_path(tiny_hf_dir, tmp_path):
    model = load_segmenter(str(tiny_hf_dir))
    assert (model.kind, model.image_size, model.embedding_size) == ("hf_sam", 64, 4)
    assert model.normalization["mode"] == "meanstd"  # SAM default without a preprocessor config
    pixel_values, sizes = model.preprocess(random_image(48, 64)[None])
    embeddings = model.embed(pixel_values)
    assert embeddings.shape == (1, 32, 4, 4)
    logits = model.decode(embeddings, BOXES)
    assert logits.shape == (1, 2, 16, 16)
    assert model.postprocess(logits, sizes).shape == (1, 2, 48, 64)
    save_segmenter(model, tmp_path / "hf_seg")
    again = load_segmenter(str(tmp_path / "hf_seg"))
    np.testing.assert_allclose(again(pixel_values, BOXES).numpy(), model(pixel_values, BOXES).numpy(), atol=1e-6)


def test_hf_preprocessor_config_controls_normalization(tiny_hf_dir):
    (tiny_hf_dir / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    try:
        assert load_segmenter(str(tiny_hf_dir)).normalization == {"mode": "none"}
    finally:
        (tiny_hf_dir / "preprocessor_config.json").unlink()


def test_load_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: neither"):
        load_segmenter(str(tmp_path / "empty"))
    with pytest.raises(OSError, match="no/such-model"):
        load_segmenter("no/such-model")
    with pytest.raises(ValueError, match="Unknown segmenter preset 'litemedsam-lung'.*litemedsam-tiny"):
        load_segmenter("litemedsam-lung")
