"""Grad-CAM, the report folder and its edge cases, on fake run directories."""

import json
import math

import numpy as np
import pytest

from evaluation_fakes import SIZE, make_run, tiny_model, write_images
from tfcxr.evaluation import gradcam, report
from tfcxr.evaluation.runs import load_run, load_runs
from tfcxr.rundir import best_of
from tfcxr.labels import NO_FINDING, TARGETS


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("img"), num_images=24)


@pytest.mark.parametrize("nested", [False, True])
def test_grad_cam_shapes_range_and_probabilities(nested):
    model = tiny_model(nested)
    assert gradcam.find_target_layer(model) == ("backbone/last_conv" if nested else "last_conv")
    x = np.random.default_rng(0).uniform(size=(3, SIZE, SIZE, 1)).astype("float32")
    cams, probs = gradcam.grad_cam(model, x, [0, 1, 4])
    assert cams.shape == (3, SIZE, SIZE) and cams.min() >= 0 and cams.max() <= 1
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="must be"):
        gradcam.grad_cam(model, x[..., 0], 0)


def test_prepare_inputs_applies_the_run_masking(images):
    image_paths, mask_paths = images
    tight, raw, masks = gradcam.prepare_inputs(image_paths[:2], mask_paths[:2], {"mask": "tight"}, SIZE)
    assert tight.shape == raw.shape == (2, SIZE, SIZE, 1) and masks[0].shape == (SIZE, SIZE)
    assert tight[0][~masks[0]].mean() < 0.05 < 0.1 < raw[0][~masks[0]].mean()
    with pytest.raises(ValueError, match="mask_path"):
        gradcam.prepare_inputs(image_paths[:1], [""], {"mask": "tight"}, SIZE)


def test_report_folder_end_to_end(tmp_path, images):
    image_paths, mask_paths = images
    dirs = [make_run(tmp_path / "runs" / f"tiny_{mode}", image_paths, mask_paths, mask=mode, seed=i, nested=i == 1)
            for i, mode in enumerate(["original", "tight", "loose"])]
    out = tmp_path / "report"
    result = report.write_report(load_runs(dirs), out, num_resamples=200, gradcam_images=3)
    for name in ["metrics.json", "report.md", "roc_overlay.png", "mask_mode_comparison.png",
                 "mask_overlay_grid.png", "gradcam.png", "roc_tiny_loose.png"]:
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert [r["label"] for r in saved["runs"]] == ["tiny / original", "tiny / tight", "tiny / loose"]
    run0 = saved["runs"][0]
    assert set(run0["classes"]) == set(TARGETS) | {NO_FINDING}
    lo, hi = run0["macro"]["auroc_ci"]
    assert lo <= run0["macro"]["auroc"] <= hi
    assert run0["efficiency"]["epochs_to_best"] == 2 and run0["efficiency"]["best_val_auroc"] == 0.7
    assert len(saved["comparisons"]) == 3
    assert 0 <= saved["comparisons"][0]["delong"]["Mass"]["p_value"] <= 1
    assert not saved["notes"], saved["notes"]
    md = (out / "report.md").read_text()
    assert "| tiny / loose |" in md and "Mask-mode comparison" in md and "Sensitivity at 90% specificity" in md
    assert result["runs"][1]["mask"] == "tight"


def test_class_without_positives_is_reported_not_crashing(tmp_path, images):
    image_paths, mask_paths = images
    labels = np.zeros((len(image_paths), len(TARGETS)), int)
    labels[::3, 0] = 1  # Mass only; Nodule..Fibrosis have no positives
    labels[1::4, 2] = 1
    run = make_run(tmp_path / "r", image_paths, mask_paths, labels=labels, model=False)
    out = tmp_path / "rep"
    report.write_report(load_runs([run]), out, num_resamples=50, gradcam_images=2)
    saved = json.loads((out / "metrics.json").read_text())["runs"][0]
    assert saved["classes"]["Nodule"]["auroc"] is None
    assert saved["classes"]["Nodule"]["undefined"].startswith("no positives in the test set")
    assert saved["macro"]["classes_included"] == ["Mass", "Pneumonia"]
    assert math.isclose(saved["macro"]["auroc"],
                        (saved["classes"]["Mass"]["auroc"] + saved["classes"]["Pneumonia"]["auroc"]) / 2)
    md = (out / "report.md").read_text()
    assert "Nodule AUROC undefined: no positives in the test set" in md
    assert "Grad-CAM skipped" in md and "best.keras: missing" in md


def test_different_test_sets_error_names_both_runs(tmp_path, images):
    image_paths, mask_paths = images
    a = make_run(tmp_path / "a", image_paths, mask_paths, model=False)
    b = make_run(tmp_path / "b", image_paths[:-2], mask_paths[:-2], model=False)
    with pytest.raises(ValueError, match="different test images: 2 only in the first"):
        report.evaluate_runs(load_runs([a, b]), num_resamples=20)
    result = report.evaluate_runs(load_runs([a, b]), num_resamples=20, require_same_test_set=False)
    assert "skipped" in result["comparisons"][0]


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
