"""tfcxr.evaluate: `python -m tfcxr.evaluate` on fake run directories, and its terminal summary table."""

import json
import math

import pytest

from evaluation_fakes import make_run, write_images
from tfcxr import evaluate
from tfcxr.labels import NO_FINDING, TARGETS


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    image_paths, mask_paths = write_images(root, num_images=16)
    return [make_run(root / f"run_{mode}", image_paths, mask_paths, mask=mode, seed=i, model=False)
            for i, mode in enumerate(["original", "loose"])]


def test_cli_writes_report_and_prints_table(runs, tmp_path, capsys):
    out = tmp_path / "rep"
    rc = evaluate.main([str(r) for r in runs] + ["--out", str(out), "--bootstrap", "100", "--gradcam-images", "0",
                                                  "--no-finding-score", "prod"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "tiny / original" in printed and "macro" in printed
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["settings"]["bootstrap"]["num_resamples"] == 100
    assert saved["runs"][1]["no_finding_score"] == "prod"
    assert (out / "roc_run_loose.png").is_file() and not (out / "gradcam.png").exists()


def test_cli_errors_are_clear(runs, tmp_path, caplog):
    assert evaluate.main([str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "run directory not found" in caplog.text
    with pytest.raises(SystemExit):
        evaluate.build_parser().parse_args([str(runs[0]), "--out", "x", "--no-finding-score", "min"])


def test_bad_bootstrap_is_a_user_error(runs, tmp_path, caplog):
    out = tmp_path / "rep"
    assert evaluate.main([str(runs[0]), "--out", str(out), "--bootstrap", "0"]) == 2
    assert "--bootstrap must be >= 1. Received: 0" in caplog.text
    assert not out.exists()


def test_summary_table_rows_and_columns():
    def run(label, aurocs, macro):
        return {"label": label, "macro": {"auroc": macro},
                "classes": {name: {"auroc": value} for name, value in zip(TARGETS + (NO_FINDING,), aurocs)}}

    result = {"runs": [run("tiny / original", [0.5, 0.61234, 0.7, 0.8, 0.9, 0.25], 0.7),
                       run("b", [1.0, 0.0, math.nan, 0.8, 0.9, None], 0.675)]}
    lines = evaluate.summary_table(result).split("\n")
    assert len(lines) == 3
    assert lines[0].split() == ["run", *TARGETS, "macro", "No", "Finding"]
    assert lines[1].startswith("tiny / original  ")
    assert lines[1].split()[3:] == ["0.500", "0.612", "0.700", "0.800", "0.900", "0.700", "0.250"]
    assert lines[2].split() == ["b", "1.000", "0.000", "n/a", "0.800", "0.900", "0.675", "n/a"]
    # Columns line up: each header name starts where its values start.
    for name in ("Mass", "Edema", "macro", "No Finding"):
        column = lines[0].index(name)
        assert lines[1][column - 2:column] == "  " and lines[1][column] != " ", name
