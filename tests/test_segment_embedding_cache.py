"""Tests for tfcxr.segment.embedding_cache: content-addressed embeddings keyed by the encoder's weights."""

from types import SimpleNamespace

import numpy as np

from tfcxr.segment import embedding_cache


class _Weight:
    def __init__(self, value):
        self.value = value

    def numpy(self):
        return np.full(3, self.value, np.float32)


def _model(value, calls):
    return SimpleNamespace(image_encoder=SimpleNamespace(weights=[_Weight(value)]),
                           embed=lambda x: calls.append(len(x)) or np.asarray(x)[:, :1] * 2.0)


def test_fingerprint_follows_the_weights():
    assert embedding_cache.model_fingerprint(_model(1.0, [])) == embedding_cache.model_fingerprint(_model(1.0, []))
    assert embedding_cache.model_fingerprint(_model(1.0, [])) != embedding_cache.model_fingerprint(_model(2.0, []))
    assert len(embedding_cache.model_fingerprint(_model(1.0, []))) == 16


def test_cache_reused_per_image_and_per_encoder(tmp_path):
    pixels = np.random.default_rng(0).random((3, 4, 4, 3)).astype(np.float32)
    calls = []
    first = embedding_cache.cached_embeddings(_model(1.0, calls), pixels[:2], tmp_path, batch_size=8)
    both = embedding_cache.cached_embeddings(_model(1.0, calls), pixels, tmp_path, batch_size=8)
    assert calls == [2, 1]  # only the new image is embedded
    np.testing.assert_array_equal(both[:2], first)
    assert both.dtype == np.float32 and both.shape == (3, 1, 4, 3)
    embedding_cache.cached_embeddings(_model(2.0, calls), pixels, tmp_path, batch_size=8)
    assert calls == [2, 1, 3]  # another encoder never reads these files
    assert len(list(tmp_path.iterdir())) == 2


def test_no_cache_dir_computes_every_time(tmp_path):
    calls = []
    pixels = np.zeros((2, 4, 4, 3), np.float32)
    embedding_cache.cached_embeddings(_model(1.0, calls), pixels, None, batch_size=1)
    embedding_cache.cached_embeddings(_model(1.0, calls), pixels, None, batch_size=1)
    assert calls == [1, 1, 1, 1] and not list(tmp_path.iterdir())
