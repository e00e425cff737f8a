"""Tests for tfcxr.segment.gate, gate_data and gate_fit: the "is this a frontal chest X-ray?" gate."""

import json

import numpy as np
import pytest

from segment_fakes import write_pairs
from tfcxr.segment import gate, gate_data, gate_fit


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


def test_negative_images_are_valid_inputs():
    rng = np.random.default_rng(0)
    cxr = rng.random((60, 40, 1), dtype=np.float32)
    for kind in gate_data.TRANSFORMS:
        out = gate_data.transformed(cxr, kind, rng)
        assert out.ndim == 3 and out.shape[-1] == 1 and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
    np.testing.assert_array_equal(gate_data.transformed(cxr, "flip_lr", rng), cxr[:, ::-1])
    assert gate_data.transformed(cxr, "rotate90", rng).shape == (40, 60, 1)
    for kind in gate_data.SYNTHETIC:
        out = gate_data.synthetic(kind, rng, size=(32, 32))
        assert out.shape == (32, 32, 1) and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
    with pytest.raises(ValueError, match="kind"):
        gate_data.synthetic("stripes", rng)
    photos = gate_data.photos()
    assert len(photos) >= 15 and "camera" in photos and "chessboard_GRAY" not in photos
    assert all(p.ndim == 3 and p.shape[-1] == 1 and p.max() <= 1 for p in photos.values())
    faces = gate_data.faces(3, rng)
    assert len(faces) == 3 and faces[0].shape == (128, 128, 1)


def test_fit_and_measure_on_tiny_pairs(tmp_path):
    from tfcxr.segment import load_segmenter

    specs = {"train": [str(write_pairs(tmp_path / "train", count=12, size=(64, 64)))],
             "validation": [str(write_pairs(tmp_path / "val", count=6, size=(64, 64)))],
             "test": [str(write_pairs(tmp_path / "test", count=6, size=(64, 64)))]}
    config = gate_fit.GateConfig(components=8, synthetic_per_kind={"train": 2, "validation": 1, "test": 1},
                                 photo_crops=1, faces=2, max_false_rejection=0.2)
    model = load_segmenter("tiny")
    samples = gate_fit.gate_samples(config, specs)
    kinds = {s.kind for s in samples["train"]}
    assert gate_fit.REAL in kinds and "photo" in kinds and set(gate_data.SYNTHETIC) <= kinds
    photo_names = [{s.key.split("/")[1] for s in samples[split] if s.kind == "photo"} for split in gate_fit.SPLITS]
    assert not (photo_names[0] & photo_names[1]) and not (photo_names[0] & photo_names[2])  # a photo in one split
    fitted, report = gate_fit.fit_and_measure(model, config, specs, tmp_path / "cache")
    assert set(report) >= {"threshold", "validation", "test", "counts"}
    assert report["counts"]["test"]["real"] == 6 and 0.0 <= report["test"]["auroc"] <= 1.0
    assert report["validation"]["false_rejection"] <= 0.2
    assert set(report["test"]["flagged_by_kind"]) >= {"real_cxr", "photo", "uniform_noise"}
    cached = len(list((tmp_path / "cache").rglob("*.npz")))
    gate_fit.fit_and_measure(model, config, specs, tmp_path / "cache")  # a rerun reuses every feature
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == cached


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


def test_holdout_split_components_choice_and_extra_transforms(tmp_path):
    from tfcxr.segment import load_segmenter

    specs = {"train": [str(write_pairs(tmp_path / "train", count=12, size=(64, 64)))],
             "validation": [str(write_pairs(tmp_path / "val", count=6, size=(64, 64), stems=[f"v{i}" for i in
                                                                                              range(6)]))],
             "test": [str(write_pairs(tmp_path / "test", count=4, size=(64, 64), stems=["t0", "t1", "t2", "t3"]))]}
    # the holdout folder shares two images with the pair sets (p0, v1): only its three unused images count
    write_pairs(tmp_path / "pool", count=5, size=(64, 64), stems=["p0", "v1", "h0", "h1", "h2"])
    base = dict(synthetic_per_kind={"train": 2, "validation": 1, "test": 1, "holdout": 1}, photo_crops=1,
                faces=2, max_false_rejection=0.2)
    config = gate_fit.GateConfig(components=[4, 8], holdout_folders=[str(tmp_path / "pool" / "images")],
                                 extra_transforms={"train": {"flip_lr": 2}}, **base)
    samples = gate_fit.gate_samples(config, specs)
    holdout_real = [s.key for s in samples[gate_fit.HOLDOUT] if s.kind == gate_fit.REAL]
    assert holdout_real == ["holdout/h0", "holdout/h1", "holdout/h2"]
    extra = [s.key for s in samples["train"] if s.key.endswith("/extra")]
    train_real = [s.key for s in samples["train"] if s.kind == gate_fit.REAL]
    assert len(train_real) == 12 and extra == [f"{key}/flip_lr/extra" for key in train_real[1::2]]
    # the extra transforms and the holdout draw their own seeds: every other sample keeps its key and seed
    plain = gate_fit.gate_samples(gate_fit.GateConfig(components=8, **base), specs)
    for split in gate_fit.SPLITS:
        kept = [s for s in samples[split] if not s.key.endswith("/extra")]
        assert [s.key for s in kept] == [s.key for s in plain[split]]
        for a, b in zip(kept, plain[split]):
            np.testing.assert_array_equal(a.load(), b.load())
    fitted, report = gate_fit.fit_and_measure(load_segmenter("tiny"), config, specs, tmp_path / "cache")
    assert [row["components"] for row in report["components_sweep"]] == [4, 8]
    best = max(report["components_sweep"], key=lambda row: row["validation_non_cxr_flagged"])
    assert report["components"] == fitted.components.shape[1] == best["components"]
    assert report["counts"]["holdout"]["real"] == 3 and "auroc" in report["holdout"]
    with pytest.raises(ValueError, match="unknown transform 'mirror'"):
        gate_fit.gate_samples(gate_fit.GateConfig(extra_transforms={"train": {"mirror": 2}}, **base), specs)
