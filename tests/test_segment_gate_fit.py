"""Tests for tfcxr.segment.gate_fit: the gate's samples per split, fitting, the components choice and the report."""

import numpy as np
import pytest

from segment_fakes import write_pairs
from tfcxr.segment import gate_data, gate_fit


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


def test_folder_images_are_split_by_patient_and_capped_per_split(tmp_path):
    stems = [f"{patient:05d}_{index:03d}" for patient in range(12) for index in range(3)]  # NIH-style names
    folder = write_pairs(tmp_path / "nih", size=(32, 32), stems=stems) / "images"
    base = dict(synthetic_per_kind={}, photo_crops=0, faces=0, transform_every=1000)
    samples = gate_fit.gate_samples(gate_fit.GateConfig(real_folders=[str(folder)], **base), {})
    split_of = {}
    for split in gate_fit.SPLITS:
        for sample in samples[split]:
            if sample.kind == gate_fit.REAL:
                assert sample.key.startswith("file/") and sample.source == "images"
                split_of[sample.key[len("file/"):]] = split
    assert sorted(split_of) == sorted(stems)
    for patient in range(12):  # no patient in two splits
        assert len({split_of[f"{patient:05d}_{index:03d}"] for index in range(3)}) == 1
    reals = {split: [s.key for s in samples[split] if s.kind == gate_fit.REAL] for split in gate_fit.SPLITS}
    capped = gate_fit.gate_samples(gate_fit.GateConfig(real_folders=["images"], folder_limit={"train": 2}, **base),
                                   {}, root=folder.parent)  # a folder relative to the data root
    train = [s.key for s in capped["train"] if s.kind == gate_fit.REAL]
    assert len(train) == min(2, len(reals["train"])) and set(train) <= set(reals["train"])
    assert [s.key for s in capped["test"] if s.kind == gate_fit.REAL] == reals["test"]  # other splits uncapped
    np.testing.assert_array_equal(capped["train"][0].load(), samples["train"][
        reals["train"].index(train[0])].load())  # the sample still loads its own file


def test_cross_fitting_keeps_a_source_image_and_its_transforms_in_one_fold(tmp_path):
    from tfcxr.segment import load_segmenter

    assert gate_fit._group("pair/p3/flip_lr/extra") == gate_fit._group("pair/p3") == "pair/p3"
    assert gate_fit._group("photo/astronaut/2") == "photo/astronaut"
    assert gate_fit._group("train/uniform_noise/4") == "train/uniform_noise/4"  # synthetic images stand alone
    specs = {"train": [str(write_pairs(tmp_path / "train", count=12, size=(64, 64)))],
             "validation": [str(write_pairs(tmp_path / "val", count=6, size=(64, 64), stems=[f"v{i}" for i in
                                                                                              range(6)]))],
             "test": [str(write_pairs(tmp_path / "test", count=4, size=(64, 64), stems=["t0", "t1", "t2", "t3"]))]}
    config = gate_fit.GateConfig(components=[4, 8], folds=3, max_false_rejection=0.1, photo_crops=1, faces=2,
                                 synthetic_per_kind={"train": 2, "validation": 1, "test": 1})
    fitted, report = gate_fit.fit_and_measure(load_segmenter("tiny"), config, specs, tmp_path / "cache")
    oof = report["cross_validation"]
    assert "validation" not in report and oof["folds"] == 3  # validation is in the pool, never scored in-sample
    assert [row["components"] for row in report["components_sweep"]] == [4, 8]
    best = max(report["components_sweep"], key=lambda row: row["out_of_fold_non_cxr_flagged"])
    assert fitted.components.shape[1] == best["components"] and oof["non_cxr_flagged"] == best[
        "out_of_fold_non_cxr_flagged"]
    assert oof["flagged_by_kind"]["real_cxr"]["n"] == 18 and oof["false_rejection"] <= 0.1
    assert float(fitted.threshold) == pytest.approx(report["threshold"])
