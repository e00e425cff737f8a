"""Loading run directories and grouping them into cells (tfcxr.evaluation.runs), on fake run directories."""

import types

import numpy as np
import pandas as pd
import pytest

from evaluation_fakes import make_run, write_images
from tfcxr.evaluation.runs import (
    check_same_test_images, differing_keys, differing_settings, group_cells, load_run, load_runs, run_seed,
    short_value,
)
from tfcxr.labels import NO_FINDING, TARGETS
from tfcxr.rundir import best_of


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("img"), num_images=12)


def _fake(**config):
    """A stand-in for a `Run` where only the config matters (grouping)."""
    return types.SimpleNamespace(config=config)


def test_load_run_validates_files(tmp_path, images):
    image_paths, mask_paths = images
    run = make_run(tmp_path / "r", image_paths, mask_paths, model=False)
    frame = (run / "test_predictions.csv").read_text().replace("p_Edema", "p_Oedema")
    (run / "test_predictions.csv").write_text(frame)
    with pytest.raises(ValueError, match=r"test_predictions.csv: missing columns \['p_Edema'\]"):
        load_run(run)
    (run / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="config.yaml: missing"):
        load_run(run)
    assert best_of(None).epoch is None


def test_load_run_reads_the_arrays_in_target_order(tmp_path, images):
    image_paths, mask_paths = images
    run = load_run(make_run(tmp_path / "r", image_paths, mask_paths, mask="loose", model=False))
    assert run.label == "tiny / loose" and run.backbone == "tiny" and run.mask == "loose"
    ids = run.predictions["image_id"].tolist()
    assert ids == sorted(ids)  # make_run shuffles the rows
    labels, probs = run.labels(), run.probabilities()
    assert labels.shape == probs.shape == (len(image_paths), len(TARGETS))
    assert probs.dtype == np.float64 and labels.dtype == np.int64
    np.testing.assert_array_equal(labels[:, 2], run.predictions[f"y_{TARGETS[2]}"])
    np.testing.assert_array_equal(probs[:, 4], run.predictions[f"p_{TARGETS[4]}"])
    np.testing.assert_array_equal(run.no_finding_labels(), run.predictions[f"y_{NO_FINDING}"])
    assert run.efficiency["epochs_run"] == 3 and len(run.history) == 3
    assert not run.model_path.is_file()
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        load_run(tmp_path / "absent")


def test_group_cells_pairs_seeds_and_labels_the_settings_that_vary():
    runs = [_fake(backbone="b", mask="tight", lr=0.1, seed=2, out="x", masks="m1"),
            _fake(backbone="b", mask="tight", lr=0.1, seed=0, out="y", masks="m1"),
            _fake(backbone="b", mask="tight", lr=0.1, seed=0, out="z", masks="m1"),  # same seed again: own cell
            _fake(backbone="b", mask="loose", lr=0.2, seed=0, out="w", masks="m2")]
    cells = group_cells(runs)
    assert [c.label for c in cells] == ["b / tight, lr=0.1", "b / tight, lr=0.1", "b / loose, lr=0.2"]
    assert cells[0].seeds == [0, 2] and cells[0].runs == [runs[1], runs[0]]  # sorted by seed
    assert cells[1].runs == [runs[2]] and "seed" not in cells[0].config and "out" not in cells[0].config
    assert differing_keys(cells[0], cells[2]) == ["lr", "mask"]  # `masks` follows the mask mode
    assert differing_keys(cells[0], cells[1]) == []
    assert run_seed(_fake(backbone="b")) is None


def test_linked_keys_count_as_one_setting():
    cells = group_cells([_fake(backbone="b", mask="tight", weights="none", freeze=0, out="x"),
                         _fake(backbone="b", mask="tight", weights="ssl.h5", freeze=3, out="y"),
                         _fake(backbone="b", mask="loose", weights="ssl.h5", freeze=3, out="z")])
    assert differing_settings(cells[0], cells[1]) == ["freeze", "weights"]  # two settings: not compared
    assert differing_settings(cells[0], cells[1], [["weights", "freeze"]]) == ["freeze+weights"]  # one variant
    assert differing_settings(cells[0], cells[2], [["weights", "freeze"]]) == ["freeze+weights", "mask"]
    assert differing_settings(cells[1], cells[2], [["weights", "freeze"]]) == ["mask"]


def test_short_value_names_pretraining_runs_by_folder():
    assert short_value("weights", "runs/pretrain_tiny/backbone.weights.h5") == "pretrain_tiny"
    assert short_value("weights", "x/w.weights.h5") == "w.weights.h5"
    assert short_value("weights", "ImageNet") == "ImageNet" and short_value("lr", 0.1) == "0.1"


def test_load_runs_disambiguates_names_and_labels(tmp_path, images):
    image_paths, mask_paths = images
    dirs = [make_run(tmp_path / parent / "run", image_paths, mask_paths, model=False) for parent in ("a", "b")]
    runs = load_runs(dirs)
    assert [r.name for r in runs] == ["a_run", "b_run"]  # same directory name: the parent is prepended
    # The same config and seed twice: two single-run cells with one label, told apart by the run name.
    assert [r.label for r in runs] == ["tiny / original (a_run)", "tiny / original (b_run)"]
    dirs.append(make_run(tmp_path / "c" / "other", image_paths, mask_paths, seed=1, model=False))
    runs = load_runs(dirs)
    # c is seed 1 of a's cell (the first with no seed 1); b stays a cell of its own.
    assert [r.label for r in runs] == ["tiny / original, seed 0", "tiny / original", "tiny / original, seed 1"]


def test_check_same_test_images_compares_ids_and_labels(tmp_path, images):
    image_paths, mask_paths = images
    a, b = (load_run(make_run(tmp_path / name, image_paths, mask_paths, seed=i, model=False))
            for i, name in enumerate("ab"))
    check_same_test_images(a, b)  # same images and labels, other probabilities
    path = tmp_path / "b" / "test_predictions.csv"
    frame = pd.read_csv(path)
    frame.loc[frame["image_id"] == a.predictions["image_id"][0], f"y_{TARGETS[0]}"] ^= 1
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"disagree on the labels of 1 test images \(e.g. \['00000000_000.png'\]\)"):
        check_same_test_images(a, load_run(tmp_path / "b"))
    frame.loc[frame["image_id"] == a.predictions["image_id"][0], f"y_{TARGETS[0]}"] ^= 1  # labels agree again
    frame.loc[frame["image_id"] == a.predictions["image_id"][1], "patient_id"] = 999999
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"disagree on the patient of 1 test images \(e.g. \['00000001_000.png'\]\)"):
        check_same_test_images(a, load_run(tmp_path / "b"))
    with pytest.raises(ValueError, match="different test images: 0 only in the first.*1 only in the second"):
        check_same_test_images(a.__class__(**{**vars(a), "predictions": a.predictions.iloc[1:]}), b)
