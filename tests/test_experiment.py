"""`python -m tfcxr.experiment`: YAML validation, the grid, resumability, and a real tiny train + evaluate."""

import json
import pathlib

import pytest
import yaml

from tfcxr import experiment

REPO = pathlib.Path(__file__).resolve().parents[1]


def _write(tmp_path, values):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def _complete(config):
    """Make the run directory of `config` look like a finished run (its config and the files that mark it)."""
    from tfcxr.config import save_config

    out = pathlib.Path(config.out)
    save_config(config, out / "config.yaml")
    for done in ("best.keras", "test_predictions.csv", "efficiency.json"):
        (out / done).write_text("x")
    return out


@pytest.mark.parametrize("name, backbones", [
    ("paper.yaml", ("resnet50", "efficientnetb0")),
    ("paper_small.yaml", ("resnet50", "efficientnetb0")),
])
def test_shipped_configs_parse_into_the_grid(name, backbones):
    exp = experiment.load_experiment(REPO / "configs" / name)
    cells = [cell for cell, _ in exp.cells()]
    assert cells == [f"{b}-{m}" for b in backbones for m in ("original", "tight", "loose")]
    for cell, overrides in exp.cells():
        config = experiment._resolve(exp, cell, overrides)  # every cell is a valid TrainConfig
        assert config.out == str(exp.out / cell)
    assert exp.evaluate["num_resamples"] == 1000


def test_the_small_nih_grid_has_every_mode_both_inits_and_three_seeds_per_backbone():
    exp = experiment.load_experiment(REPO / "configs" / "paper_small_nih.yaml")
    runs = {name: experiment._resolve(exp, name, overrides) for name, overrides in exp.cells()}
    assert len(runs) == 3 * 4 * 2 * 3
    for backbone in ("tiny", "resnet50", "efficientnetb0"):
        for mask in ("original", "tight", "loose", "inverse"):
            for seed in (0, 1, 2):
                ssl = runs[f"{backbone}-{mask}-ssl-seed{seed}"]
                assert ssl.weights == f"runs/pretrain_{backbone}_nih/backbone.weights.h5" and ssl.seed == seed
                assert runs[f"{backbone}-{mask}-random-seed{seed}"].weights == "none"
    pretrain = {backbone: yaml.safe_load((REPO / "configs" / f"pretrain_{backbone}_nih.yaml").read_text())
                for backbone in ("tiny", "resnet50", "efficientnetb0")}
    for backbone, values in pretrain.items():  # each backbone's pretraining config writes what the grid loads
        assert values["backbone"] == backbone and values["exclude_splits"] == ["test"]
        assert values["exclude_split_of"] == "configs/paper_small_nih.yaml"
    assert pretrain["resnet50"]["out"] == "runs/pretrain_resnet50_nih"
    assert pretrain["efficientnetb0"]["out"] == "runs/pretrain_efficientnetb0_nih"


def _is_experiment(path):
    values = yaml.safe_load(path.read_text())
    return isinstance(values, dict) and "grid" in values


@pytest.mark.parametrize("path", sorted(p.name for p in (REPO / "configs").glob("*.yaml") if _is_experiment(p)))
def test_every_shipped_experiment_config_resolves_every_cell(path):
    exp = experiment.load_experiment(REPO / "configs" / path)
    assert exp.cells()
    for name, overrides in exp.cells():
        config = experiment._resolve(exp, name, overrides)
        unfilled = {k: v for k, v in vars(config).items() if isinstance(v, str) and "{" in v}
        assert not unfilled, f"{path}: cell {name}: braces left in {unfilled}"


@pytest.mark.parametrize(
    "values, match",
    [
        ({"grid": {"mask": ["tight"]}, "trian": {}}, r"unknown key\(s\) \['trian'\]"),
        ({"grid": {"mask": ["tight"]}, "train": {"epoch": 2}}, r"unknown or reserved `train` key\(s\) \['epoch'\]"),
        ({"grid": {"mask": ["tight"]}, "train": {"out": "x"}}, r"reserved `train` key\(s\) \['out'\]"),
        ({"grid": {"mask": []}}, "grid `mask` must be a non-empty list"),
        ({"grid": {"mask": ["tight"]}, "train": {"mask": "loose"}}, "both in `grid` and `train`"),
        ({"grid": {"mask": ["tight"]}, "evaluate": {"bootstraps": 5}}, r"unknown `evaluate` key\(s\) \['bootstraps'\]"),
        ({"grid": {}}, "`grid` is empty"),
    ],
)
def test_bad_yaml_is_an_error_naming_the_file_and_key(tmp_path, values, match):
    path = _write(tmp_path, values)
    with pytest.raises(ValueError, match=match) as info:
        experiment.load_experiment(path)
    assert str(path) in str(info.value)


def test_unreadable_experiment_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        experiment.load_experiment(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("grid: [unclosed\n", encoding="utf-8")
    with pytest.raises(ValueError, match="broken.yaml: invalid YAML"):
        experiment.load_experiment(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="list.yaml: expected a mapping"):
        experiment.load_experiment(listing)


def test_bad_cell_value_and_cli_error(tmp_path, caplog):
    path = _write(tmp_path, {"grid": {"mask": ["tight", "lose"]}, "train": {"epochs": 1}})
    assert experiment.main(["--config", str(path), "--dry-run"]) == 2
    assert "cell 'lose'" in caplog.text and "mask='lose'" in caplog.text
    assert experiment.main(["--config", str(tmp_path / "missing.yaml")]) == 2


def test_tiny_grid_trains_resumes_and_reports(tmp_path, monkeypatch):
    """Real tfcxr.train on a tiny synthetic set, then the report; a re-run skips both cells."""
    monkeypatch.chdir(tmp_path)
    values = {
        "name": "tiny grid",
        "out": str(tmp_path / "runs"),
        "grid": {"backbone": ["tiny"], "mask": ["original", "tight"]},
        "train": {"data": "demo", "demo_dir": str(tmp_path / "demo"), "demo_num_images": 80,
                  "demo_image_size": 48, "image_size": 32, "epochs": 1, "batch_size": 16,
                  "augment": False, "precision": "float32"},
        "evaluate": {"bootstrap": 50, "gradcam_images": 2},
    }
    path = _write(tmp_path, values)
    assert experiment.main(["--config", str(path)]) == 0
    report = tmp_path / "runs" / "report"
    saved = json.loads((report / "metrics.json").read_text())
    assert [r["label"] for r in saved["runs"]] == ["tiny / original", "tiny / tight"]
    assert saved["runs"][0]["n_images"] == saved["comparisons"][0]["n_images"] > 0
    assert saved["runs"][1]["efficiency"]["epochs_run"] == 1
    assert (report / "gradcam.png").is_file() and (report / "mask_overlay_grid.png").is_file()
    assert not [n for n in saved["notes"] if "skipped" in n], saved["notes"]

    exp = experiment.load_experiment(path)
    outcome = experiment.run_experiment(exp, dry_run=True)
    assert outcome["cells"] == {"tiny-original": "complete", "tiny-tight": "complete"}
    # A changed shared setting is refused for complete cells instead of silently reusing them.
    changed = experiment.load_experiment(path, sets=["learning_rate=0.5"])
    with pytest.raises(ValueError, match="learning_rate"):
        experiment.run_experiment(changed, dry_run=True)


def test_seeds_and_a_labelled_weights_axis_make_one_run_per_cell_and_seed(tmp_path):
    values = {"out": str(tmp_path / "runs"), "seeds": [0, 1, 2],
              "grid": {"backbone": ["tiny"], "weights": {"random": "none", "ssl": "pre/backbone.weights.h5"}},
              "train": {"mask": "original", "epochs": 1}}
    exp = experiment.load_experiment(_write(tmp_path, values))
    cells = exp.cells()
    assert [name for name, _ in cells] == [f"tiny-{w}-seed{s}" for w in ("random", "ssl") for s in (0, 1, 2)]
    name, overrides = cells[4]
    assert overrides["seed"] == 1 and overrides["weights"] == "pre/backbone.weights.h5"
    assert overrides["out"] == str(tmp_path / "runs" / name)
    assert experiment.parse_experiment({"grid": {"mask": ["tight"]}}).cells()[0][0] == "tight"  # no seeds: as before


def test_a_variant_axis_sets_several_fields_per_cell(tmp_path):
    values = {"out": str(tmp_path / "runs"), "seeds": [3],
              "grid": {"mask": ["original", "tight"],
                       "variant": {"random": {"weights": "none"},
                                   "ssl_lpft": {"weights": "pre/backbone.weights.h5", "freeze_backbone_epochs": 2}}},
              "train": {"epochs": 4}}
    exp = experiment.load_experiment(_write(tmp_path, values))
    runs = dict(exp.cells())
    assert list(runs) == ["original-random-seed3", "original-ssl_lpft-seed3", "tight-random-seed3",
                          "tight-ssl_lpft-seed3"]
    assert runs["tight-ssl_lpft-seed3"]["freeze_backbone_epochs"] == 2
    assert runs["tight-ssl_lpft-seed3"]["weights"] == "pre/backbone.weights.h5"
    assert "freeze_backbone_epochs" not in runs["tight-random-seed3"] and "variant" not in runs["tight-random-seed3"]
    assert exp.linked() == [["freeze_backbone_epochs", "weights"]]  # the report compares variants as one setting
    assert experiment.parse_experiment({"grid": {"mask": ["tight"]}}).linked() == []
    for name, overrides in exp.cells():
        config = experiment._resolve(exp, name, overrides)  # each a valid TrainConfig
        assert config.freeze_backbone_epochs == (2 if "lpft" in name else 0) and config.mask == name.split("-")[0]


def test_a_grid_value_names_the_cells_backbone_and_only_picks_cells(tmp_path):
    values = {"out": str(tmp_path / "runs"), "seeds": [0, 1],
              "grid": {"backbone": ["tiny", "resnet50"], "mask": ["original", "tight"],
                       "weights": {"random": "none", "ssl": "pre/{backbone}_{mask}/backbone.weights.h5"}},
              "train": {"data": "demo", "epochs": 1}}
    exp = experiment.load_experiment(_write(tmp_path, values))
    runs = dict(exp.cells())
    assert runs["resnet50-tight-ssl-seed1"]["weights"] == "pre/resnet50_tight/backbone.weights.h5"
    assert runs["tiny-original-ssl-seed0"]["weights"] == "pre/tiny_original/backbone.weights.h5"
    assert runs["tiny-original-random-seed0"]["weights"] == "none"
    only = experiment.parse_only(exp, ["backbone=tiny", "weights=ssl,random", "mask=tight"])
    assert [name for name, _ in exp.cells(only)] == [f"tiny-tight-{w}-seed{s}" for w in ("random", "ssl")
                                                     for s in (0, 1)]
    assert len(exp.cells()) == 16  # the whole grid, still what the report is written over
    for item, match in [("seed=0", "'seed' is not a grid axis; axes: backbone, mask, weights"),
                        ("backbone=vit", r"unknown backbone label\(s\) \['vit'\]; known: tiny, resnet50"),
                        ("backbone", "must look like axis=label")]:
        with pytest.raises(ValueError, match=match):
            experiment.parse_only(exp, [item])


@pytest.mark.parametrize("weights, match", [
    ("pre/{backbon}/w.h5", r"cell 'tiny-tight-ssl': `weights: pre/\{backbon\}/w.h5`: \{backbon\} is not one of"),
    ("pre/{}/w.h5", r"\{\} is not a bare field name"),
    ("pre/{0}/w.h5", r"\{0\} is not a bare field name"),
    ("pre/{backbone.real}/w.h5", r"\{backbone.real\} is not a bare field name"),
    ("pre/{backbone[0]}/w.h5", r"\{backbone\[0\]\} is not a bare field name"),
    ("pre/{backbone!r}/w.h5", r"\{backbone\} is not a bare field name"),
    ("pre/{backbone/w.h5", "malformed braces"),
    ("pre/{data}/w.h5", r"\{data\} names a value that has braces itself \('d/\{mask\}'\)"),
])
def test_a_bad_placeholder_is_an_error_naming_the_file_the_cell_and_the_field(tmp_path, weights, match):
    values = {"grid": {"backbone": ["tiny"], "mask": ["tight"], "weights": {"ssl": weights}},
              "train": {"data": "d/{mask}", "epochs": 1}}
    exp = experiment.load_experiment(_write(tmp_path, values))
    with pytest.raises(ValueError, match=match) as err:
        exp.cells()
    assert str(tmp_path / "exp.yaml") in str(err.value)


def test_placeholders_fill_train_and_set_values_the_same_way_on_every_call(tmp_path):
    values = {"out": str(tmp_path / "runs"), "grid": {"backbone": ["tiny", "resnet50"], "mask": ["tight"]},
              "train": {"data": "demo", "masks": "masks/{mask}", "epochs": 1}}
    path = _write(tmp_path, values)
    exp = experiment.load_experiment(path, sets=["weights=pre/{backbone}_{{x}}/w.h5"])
    runs = dict(exp.cells())
    assert runs["resnet50-tight"]["weights"] == "pre/resnet50_{x}/w.h5"  # {{ is a literal brace
    assert runs["tiny-tight"]["masks"] == "masks/tight"
    assert exp.cells() == exp.cells()
    for _, run in exp.cells():  # nothing left to fill in any field
        assert not any(isinstance(v, str) and "{" in v for k, v in run.items() if k != "weights")


def test_only_adds_labels_on_one_axis_and_intersects_axes(tmp_path, caplog):
    values = {"out": str(tmp_path / "runs"), "grid": {"backbone": ["tiny", "resnet50"], "mask": ["original", "tight"]},
              "train": {"data": "demo", "epochs": 1}}
    exp = experiment.load_experiment(_write(tmp_path, values))
    union = experiment.parse_only(exp, ["backbone=tiny", "backbone=resnet50", "mask=tight"])
    assert union == {"backbone": {"tiny", "resnet50"}, "mask": {"tight"}}
    assert [name for name, _ in exp.cells(union)] == ["tiny-tight", "resnet50-tight"]
    assert experiment.parse_only(exp, []) == {} and len(exp.cells({})) == 4
    for item, match in [("mask=tight,", "an empty label"), ("seeds=0", "seeds are not an axis")]:
        with pytest.raises(ValueError, match=match):
            experiment.parse_only(exp, [item])
    with caplog.at_level("INFO", logger="tfcxr.experiment"):
        experiment.run_experiment(exp, dry_run=True, only=union)
    skipped = [line for line in caplog.messages if "(not in --only)" in line]
    assert [line.split()[1] for line in skipped] == ["tiny-original", "resnet50-original"]


def test_the_cli_rejects_an_unknown_only_label_with_exit_2_naming_the_file(tmp_path, caplog):
    path = _write(tmp_path, {"out": str(tmp_path / "runs"), "grid": {"mask": ["original", "tight"]},
                             "train": {"data": "demo", "epochs": 1}})
    with caplog.at_level("ERROR"):
        assert experiment.main(["--config", str(path), "--only", "mask=bogus"]) == 2
    assert any(str(path) in line and "bogus" in line for line in caplog.messages)


def test_only_trains_the_chosen_cells_and_reports_every_complete_one(tmp_path, monkeypatch):
    values = {"out": str(tmp_path / "runs"), "grid": {"mask": ["original", "tight", "loose"]},
              "train": {"data": "demo", "epochs": 1}}
    exp = experiment.load_experiment(_write(tmp_path, values))
    trained, reported = [], []

    def fake_train(config):  # the cell "trains": its run directory becomes complete
        trained.append(_complete(config).name)
        return {"status": "ok"}

    monkeypatch.setattr(experiment, "run_cell", fake_train)
    monkeypatch.setattr("tfcxr.evaluation.runs.load_runs", lambda paths: [p.name for p in paths])
    monkeypatch.setattr("tfcxr.evaluation.report.write_report",
                        lambda runs, out, **kw: reported.append((runs, kw["title"])) or {})
    monkeypatch.setattr("tfcxr.evaluate.summary_table", lambda result: "")
    experiment.run_experiment(exp, only=experiment.parse_only(exp, ["mask=loose"]))
    assert trained == ["loose"] and reported[-1] == (["loose"], "exp (1 of 3 cells complete)")
    outcome = experiment.run_experiment(exp, only=experiment.parse_only(exp, ["mask=original,loose"]))
    assert trained == ["loose", "original"] and outcome["cells"]["tight"] == "new"
    assert reported[-1] == (["original", "loose"], "exp (2 of 3 cells complete)")


def test_each_cell_and_seed_resumes_on_its_own(tmp_path):
    values = {"out": str(tmp_path / "runs"), "seeds": [0, 1], "grid": {"mask": ["original"]},
              "train": {"data": "demo", "epochs": 1}}
    exp = experiment.load_experiment(_write(tmp_path, values))
    assert set(experiment.run_experiment(exp, dry_run=True)["cells"].values()) == {"new"}
    name, overrides = exp.cells()[1]
    _complete(experiment._resolve(exp, name, overrides))
    assert experiment.run_experiment(exp, dry_run=True)["cells"] == {"original-seed0": "new",
                                                                     "original-seed1": "complete"}


def test_a_complete_run_of_other_epochs_is_extended_or_refused(tmp_path):
    """More epochs than the complete run has: "partial" (train resumes it); fewer: an error naming config.yaml,
    never a silent skip that would put the old run in the report as if it were the cell's."""
    values = {"out": str(tmp_path / "runs"), "grid": {"mask": ["original"]}, "train": {"data": "demo", "epochs": 3}}
    exp = experiment.load_experiment(_write(tmp_path, values))
    name, overrides = exp.cells()[0]
    config = experiment._resolve(exp, name, overrides)
    out = _complete(config)
    assert experiment.cell_state(config) == "complete"
    longer = experiment._resolve(exp, name, dict(overrides, epochs=5))
    assert experiment.cell_state(longer) == "partial"
    from tfcxr.train import _open_run

    _open_run(longer)  # the extension starts, saves its config, then is interrupted
    assert not (out / "test_predictions.csv").exists() and not (out / "efficiency.json").exists()
    assert experiment.cell_state(longer) == "partial"  # not "complete" with the 3-epoch predictions
    _complete(config)
    shorter = experiment._resolve(exp, name, dict(overrides, epochs=2))
    with pytest.raises(ValueError, match=r"original.*: 3 epochs are trained there, more than epochs=2"):
        experiment.cell_state(shorter)


def test_cells_whose_labels_join_to_the_same_name_are_an_error(tmp_path):
    values = {"out": str(tmp_path / "runs"), "grid": {"backbone": {"a-b": "tiny", "a": "tiny"},
                                                      "mask": {"c": "tight", "b-c": "loose"}},
              "train": {"data": "demo"}}
    with pytest.raises(ValueError, match=r"exp\.yaml: cells .*'a-b-c'.* share one run directory"):
        experiment.load_experiment(_write(tmp_path, values)).cells()


@pytest.mark.parametrize("values, match", [
    ({"grid": {"mask": ["tight"]}, "seeds": [0, 0]}, "`seeds` has duplicates"),
    ({"grid": {"mask": ["tight"]}, "seeds": []}, "`seeds` must be a non-empty list of integers"),
    ({"grid": {"mask": ["tight"]}, "seeds": ["a"]}, "`seeds` must be a non-empty list of integers"),
    ({"grid": {"mask": ["tight"]}, "seeds": [0], "train": {"seed": 3}}, "`seed` is set in `train`"),
    ({"grid": {"mask": ["tight"], "seed": [1]}, "seeds": [0]}, "`seed` is set in `grid`"),
    ({"grid": {"weights": {}}}, "grid `weights` must be a non-empty list or a mapping"),
    ({"grid": {"weights": {"a/b": "none"}}}, "labels must be unique, non-empty and without '/'"),
    ({"grid": {"weights": {"a,b": "none"}}}, "without '/' or ','"),
    ({"grid": {"variant": {"a": "none"}}}, "grid `variant` 'a' must be a non-empty mapping"),
    ({"grid": {"variant": [{"weights": "none"}]}}, "grid `variant` must be a mapping label"),
    ({"grid": {"variant": {"a": {"epoch": 2}}}}, r"grid `variant` 'a' has unknown or reserved key\(s\) \['epoch'\]"),
    ({"grid": {"mask": ["tight"], "variant": {"a": {"mask": "loose"}}}}, r"sets \['mask'\], which are grid axes"),
    ({"grid": {"variant": {"a": {"epochs": 2}}}, "train": {"epochs": 3}}, "both in `grid` and `train`"),
    ({"grid": {"variant": {"a": {"seed": 2}}}, "seeds": [0]}, "`seed` is set in `grid`"),
])
def test_bad_seeds_and_axes_name_the_file(tmp_path, values, match):
    path = _write(tmp_path, values)
    with pytest.raises(ValueError, match=match) as info:
        experiment.load_experiment(path)
    assert str(path) in str(info.value)
