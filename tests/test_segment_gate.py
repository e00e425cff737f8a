"""Tests for tfcxr.segment.gate: the "is this a frontal chest X-ray?" gate (fit, score, save/load, not_cxr flag).

The negative images are tested in test_segment_gate_data.py, fitting and measuring in test_segment_gate_fit.py.
"""

import json

import numpy as np
import pytest

from segment_fakes import write_pairs
from tfcxr.segment import gate


def separable_features(n=60, features=32, seed=0):
    rng = np.random.default_rng(seed)
    real = rng.normal(0.0, 1.0, (n, features))
    other = rng.normal(3.0, 1.0, (n, features))
    return real.astype(np.float32), other.astype(np.float32)


def test_fit_gate_separates_and_round_trips(tmp_path):
    from tfcxr.segment.weights import WeightsError

    real, other = separable_features()
    fitted = gate.fit_gate(real[:40], other[:40], components=8)
    scores_real, scores_other = fitted.score_features(real[40:]), fitted.score_features(other[40:])
    assert scores_real.shape == (20,) and np.all((scores_real >= 0) & (scores_real <= 1))
    assert scores_real.min() > scores_other.max()
    fitted.threshold = np.float32(gate.threshold_for(scores_real, 0.05))
    fitted.save(tmp_path / "gate.npz")
    loaded = gate.CxrGate.load(tmp_path / "gate.npz")
    np.testing.assert_allclose(loaded.score_features(other), fitted.score_features(other), rtol=1e-6)
    assert float(loaded.threshold) == float(fitted.threshold)
    np.savez(tmp_path / "bad.npz", mean=np.zeros(3))
    with pytest.raises(WeightsError, match="bad.npz: not a gate file"):
        gate.CxrGate.load(tmp_path / "bad.npz")
    arrays = dict(np.load(tmp_path / "gate.npz"))
    arrays["weights"] = arrays["weights"][:-1]
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(WeightsError, match="short.npz: gate arrays are inconsistent"):
        gate.CxrGate.load(tmp_path / "short.npz")


def test_threshold_for_flags_at_most_the_allowed_share():
    scores = np.linspace(0.0, 1.0, 200)
    threshold = gate.threshold_for(scores, 0.01)
    assert np.mean(scores < threshold) <= 0.01 and np.mean(scores < threshold) > 0
    assert gate.threshold_for(scores, 0.0) == 0.0


def test_pooled_features_keep_the_layout():
    embeddings = np.zeros((2, 3, 8, 8), np.float32)
    embeddings[0, 1, :4, :4] = 1.0  # top-left quarter of channel 1
    features = np.asarray(gate.pooled_features(embeddings))
    assert features.shape == (2, 3 * gate.GRID * gate.GRID)
    grid = features[0].reshape(gate.GRID, gate.GRID, 3)
    np.testing.assert_allclose(grid[:2, :2, 1], 1.0)
    assert grid[2:, :, 1].sum() == 0 and grid[..., 0].sum() == 0


def test_gate_is_saved_with_the_segmenter_and_flags_not_cxr(tmp_path):
    from tfcxr.segment import load_segmenter, predict, qc
    from tfcxr.segment.segmenter_format import save_segmenter
    from tfcxr.segment.weights import WeightsError

    model = load_segmenter("tiny")
    real, other = separable_features(features=32 * gate.GRID * gate.GRID)
    model.gate = gate.fit_gate(real, other, components=8)
    model.gate.threshold = np.float32(1.01)  # every image below it: all flagged not_cxr
    save_segmenter(model, tmp_path / "seg")
    meta = json.loads((tmp_path / "seg" / "segmenter.json").read_text())
    assert meta["gate"]["file"] == "gate.npz" and len(meta["gate"]["sha256"]) == 64
    loaded = load_segmenter(str(tmp_path / "seg"))
    assert float(loaded.gate.threshold) == pytest.approx(1.01)
    images = write_pairs(tmp_path / "pairs", count=2, size=(64, 64)) / "images"
    counts = predict.generate_masks(loaded, str(images), tmp_path / "masks", batch_size=2)
    table = qc.read_qc(tmp_path / "masks")
    assert counts["not_cxr"] == 2 and all("not_cxr" in f for f in table["flags"])
    assert all(0.0 <= float(s) <= 1.0 for s in table["cxr_score"])
    gate_path = tmp_path / "seg" / "gate.npz"
    gate_path.write_bytes(gate_path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(WeightsError, match="gate.npz: sha256 mismatch"):
        load_segmenter(str(tmp_path / "seg"))


def test_float16_components_are_stored_at_half_size_without_changing_scores(tmp_path):
    real, other = separable_features(features=32 * gate.GRID * gate.GRID)
    plain = gate.fit_gate(real, other, components=8)
    half = gate.fit_gate(real, other, components=8, components_dtype="float16")
    plain.save(tmp_path / "plain.npz")
    half.save(tmp_path / "half.npz")
    assert np.load(tmp_path / "plain.npz")["components"].dtype == np.float32
    assert np.load(tmp_path / "half.npz")["components"].dtype == np.float16
    assert (tmp_path / "half.npz").stat().st_size < 0.75 * (tmp_path / "plain.npz").stat().st_size
    loaded = gate.CxrGate.load(tmp_path / "half.npz")
    assert loaded.components.dtype == np.float32
    np.testing.assert_array_equal(loaded.score_features(real), half.score_features(real))  # lossless round trip
    np.testing.assert_allclose(half.score_features(other), plain.score_features(other), atol=1e-3)
