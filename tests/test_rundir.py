"""`tfcxr.rundir.RunDir`: layout, config read once, best epoch, resume check, and the run's No Finding score."""

import numpy as np
import pandas as pd
import pytest
import yaml

import export_helpers as H
from evaluation_fakes import make_run, write_images
from tfcxr.config import TrainConfig
from tfcxr.rundir import RunDir, best_of


def test_layout_names_every_file(tmp_path):
    run = RunDir(tmp_path)
    assert run.FILES == ("config.yaml", "best.keras", "checkpoints", "history.csv", "tensorboard",
                         "test_predictions.csv", "efficiency.json")
    assert run.model_path == tmp_path / "best.keras" and run.history_path == tmp_path / "history.csv"
    assert not run.is_complete() and run.history() is None and run.efficiency() is None


def test_config_round_trip_and_old_config_without_new_field(tmp_path):
    run = RunDir(tmp_path)
    run.save_config(TrainConfig(mask="tight", image_size=32, no_finding_score="prod"))
    assert run.config.no_finding_score == "prod" and run.config.mask_spec.mode == "tight"
    assert "no_finding_score: prod" in run.config_path.read_text()
    old = RunDir(tmp_path / "old")  # written before `no_finding_score` existed
    old.path.mkdir()
    old.config_path.write_text("backbone: tiny\nmask: loose\nmargin: 0.05\nimage_size: 32\n")
    assert old.config.no_finding_score == "max" and old.no_finding_score == "max"
    old.config_path.write_text("image_size: 32\nno_finding_score: min\n")
    old = RunDir(old.path)
    with pytest.raises(ValueError, match=r"config\.yaml: `no_finding_score` must be one of"):
        old.no_finding_score
    with pytest.raises(ValueError, match=r"config\.yaml: .*no_finding_score='min'"):
        old.config


def test_settings_flatten_sections_and_nested_mask_spec(tmp_path):
    run = RunDir(tmp_path)
    tmp_path.joinpath("config.yaml").write_text(yaml.safe_dump(
        {"model": {"backbone": "tiny", "mask_spec": {"mode": "box", "margin": "3px", "image_size": 32}}}))
    assert run.settings == {"backbone": "tiny", "mask": "box", "margin": "3px", "image_size": 32}
    assert run.config.mask_spec.mode == "box" and run.mask_spec().margin == "3px"


def test_check_resume_refuses_a_different_config(tmp_path):
    run = RunDir(tmp_path)
    assert run.check_resume(TrainConfig()) is False
    run.save_config(TrainConfig(mask="tight", epochs=2))
    assert run.check_resume(TrainConfig(mask="tight", epochs=5)) is False  # epochs may change; no checkpoints yet
    run.checkpoints_path.mkdir()
    assert run.check_resume(TrainConfig(mask="tight")) is True
    with pytest.raises(ValueError, match=r"config\.yaml: .*mask: 'tight' -> 'loose'"):
        run.check_resume(TrainConfig(mask="loose"))


def test_best_epoch_from_history(tmp_path):
    run = RunDir(tmp_path)
    pd.DataFrame({"epoch": [0, 1, 2], "val_macro_auroc": [0.6, np.nan, 0.7]}).to_csv(run.history_path, index=False)
    best = run.best()
    assert (best.column, best.value, best.epoch) == ("val_macro_auroc", 0.7, 3) and run.epochs_run() == 3
    legacy = best_of(pd.DataFrame({"epoch": [0, 1], "val_auc": [0.8, 0.5]}))  # older Keras AUC column
    assert (legacy.column, legacy.epoch) == ("val_auc", 1)
    assert best_of(pd.DataFrame({"epoch": [0], "val_macro_auroc": [np.nan]})).epoch is None


def test_prod_run_is_exported_and_evaluated_with_prod(tmp_path):
    from tfcxr.evaluation import metrics, report
    from tfcxr.evaluation.runs import load_runs
    from tfcxr.export import savedmodel

    image_paths, mask_paths = write_images(tmp_path / "img", num_images=16)
    path = make_run(tmp_path / "run", image_paths, mask_paths, model=False)
    run = RunDir(path)
    run.save_config(TrainConfig(data="fake", image_size=H.TINY_SIZE, mask="original", no_finding_score="prod"))
    H.tiny_classifier(H.TINY_SIZE).save(run.model_path)

    version = savedmodel.export_savedmodel(path, tmp_path / "models")
    assert savedmodel.read_export_info(version)["no_finding_method"] == "prod"
    images = np.random.default_rng(0).random((3, H.TINY_SIZE, H.TINY_SIZE, 1), np.float32)
    out = savedmodel.run_savedmodel(version, images=images)
    np.testing.assert_allclose(out["no_finding"], np.prod(1 - out["probabilities"], axis=-1), atol=1e-6)

    result = report.evaluate_runs(load_runs([path]), num_resamples=20)["runs"][0]
    assert result["no_finding_score"] == "prod"
    (loaded,) = load_runs([path])
    prod = np.prod(1 - loaded.probabilities(), axis=1)
    expected = metrics.class_metrics(loaded.no_finding_labels(), prod, 0.9)["auroc"]
    assert result["classes"]["No Finding"]["auroc"] == pytest.approx(expected)
    override = report.evaluate_runs(load_runs([path]), num_resamples=20, no_finding_score="max")["runs"][0]
    assert override["no_finding_score"] == "max"  # the report's override still wins


@pytest.mark.parametrize("text, error", [
    (None, None), ('{"epoch": 4, "batch": -1}', None), ("{broken", "unreadable training metadata"),
    ('{"batch": 0}', "unreadable training metadata"), ('{"epoch": "4"}', "non-negative integer"),
    ('{"epoch": -1}', "non-negative integer"),
])
def test_epochs_backed_up_reads_the_backup_metadata(tmp_path, text, error):
    run = RunDir(tmp_path / "run")
    if text is not None:
        run.checkpoints_path.mkdir(parents=True)
        (run.checkpoints_path / "training_metadata.json").write_text(text)
    if error:
        with pytest.raises(ValueError, match=error) as info:
            run.epochs_backed_up()
        assert "training_metadata.json" in str(info.value)
    else:
        assert run.epochs_backed_up() == (4 if text else 0)
