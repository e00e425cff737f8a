"""`python -m tfcxr.evaluate` on fake run directories."""

import json

import pytest

from evaluation_fakes import make_run, write_images
from tfcxr import evaluate


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
