"""Tests for tfcxr.segment.beam_masks: the Beam mask pipeline on the DirectRunner with the tiny model, its options
and QC merge (two tests go through `python -m tfcxr.segment.predict --runner`, the CLI front of the pipeline)."""

import cv2
import numpy as np
import pytest

pytest.importorskip("apache_beam")

from tfcxr.segment import beam_masks, predict, qc  # noqa: E402

IN_PROCESS = ["--runner", "DirectRunner", "--direct_running_mode", "in_memory", "--direct_num_workers", "1"]


def write_images(folder):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, shape in (("a", (80, 70)), ("b", (60, 66)), ("c", (64, 64))):
        cv2.imwrite(str(folder / f"{stem}.png"), (rng.random(shape) * 255).astype(np.uint8))
    cv2.imwrite(str(folder / "blank.png"), np.full((50, 50), 7, np.uint8))
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return folder


def config(tmp_path, model="tiny", **kwargs):
    return beam_masks.BeamMaskConfig(images=str(tmp_path / "images"), out=str(tmp_path / "masks"), model=model,
                                     batch_size=2, overrides={"prompt": "prior"}, **kwargs)


def test_pipeline_writes_masks_one_qc_csv_and_reruns_skip_everything(tmp_path):
    write_images(tmp_path / "images")
    out = tmp_path / "masks"
    counts = beam_masks.run_mask_pipeline(config(tmp_path), IN_PROCESS)
    assert (counts["total"], counts["written"], counts["read_error"], counts["skipped"]) == (5, 4, 1, 0)
    for stem, shape in (("a", (80, 70)), ("b", (60, 66)), ("c", (64, 64)), ("blank", (50, 50))):
        mask = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert sorted(p.name for p in out.glob("qc*.csv")) == ["qc.csv"]
    assert (out / "qc.csv").read_text().splitlines()[0] == ",".join(qc.QC_COLUMNS)
    table = qc.read_qc(out).set_index("stem")
    assert sorted(table.index) == ["a", "b", "blank", "c", "corrupt"]
    assert table.loc["corrupt", "flags"] == "read_error" and table.loc["corrupt", "error"]
    assert table.loc["blank", "flags"].startswith("blank_image")
    assert (out / "overlay_grid.png").is_file()
    assert not list(out.glob(".*"))  # no staging folder or temporary file left

    mtime = (out / "a.png").stat().st_mtime_ns
    again = beam_masks.run_mask_pipeline(config(tmp_path), IN_PROCESS)
    assert (again["skipped"], again["written"], again["read_error"]) == (4, 0, 1)
    assert (out / "a.png").stat().st_mtime_ns == mtime
    assert len(qc.read_qc(out)) == 5


def test_beam_masks_equal_generate_masks(tmp_path):
    from tfcxr.segment import load_segmenter
    from tfcxr.segment.segmenter_format import save_segmenter

    write_images(tmp_path / "images")
    saved = save_segmenter(load_segmenter("tiny"), tmp_path / "tiny")  # random weights: every worker loads the same
    beam_masks.run_mask_pipeline(config(tmp_path, model=str(saved)), IN_PROCESS)
    model = load_segmenter(str(saved))
    predict.generate_masks(model, str(tmp_path / "images"), tmp_path / "plain", model.inference.replace(
        prompt="prior"), batch_size=2)
    for stem in ("a", "b", "c", "blank"):
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / "masks" / f"{stem}.png")),
                                      cv2.imread(str(tmp_path / "plain" / f"{stem}.png")))


def test_cli_multiprocessing_two_workers(tmp_path):
    write_images(tmp_path / "images")
    out = tmp_path / "masks"
    assert predict.main(["--images", str(tmp_path / "images"), "--out", str(out), "--model", "tiny", "--prompt",
                         "prior", "--batch-size", "2", "--runner", "DirectRunner", "--direct_num_workers", "2"]) == 0
    assert sorted(qc.read_qc(out)["stem"]) == ["a", "b", "blank", "c", "corrupt"]
    assert len(list(out.glob("*.png"))) == 5  # 4 masks + the overlay grid


@pytest.mark.parametrize("bad", [["--runner", "DirectRunner", "--no_such_option", "3"],
                                 ["--runner", "NoSuchRunner"]])
def test_bad_runner_option_exits_2_before_work(tmp_path, caplog, bad):
    write_images(tmp_path / "images")
    out = tmp_path / "masks"
    code = predict.main(["--images", str(tmp_path / "images"), "--out", str(out), "--model", "tiny", *bad])
    assert code == 2 and not out.exists()
    message = caplog.records[-1].getMessage()
    assert ("no_such_option" in message) if "--no_such_option" in bad else ("NoSuchRunner" in message)


def test_pipeline_options_error_names_the_option():
    with pytest.raises(beam_masks.PipelineOptionsError, match="--direct_num_wrokers"):
        beam_masks.pipeline_options(["--direct_num_wrokers", "2"])
    options = beam_masks.pipeline_options(["--runner", "DirectRunner", "--direct_num_workers", "2"])
    assert options.get_all_options()["direct_running_mode"] == "multi_processing"


def test_config_checks_batch_size_and_images_folder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="`batch_size` must be >= 1. Received: batch_size=0"):
        beam_masks.BeamMaskConfig(images=str(tmp_path / "images"), out=str(tmp_path / "m"), batch_size=0)
    with pytest.raises(FileNotFoundError, match="missing: not a folder of images"):
        beam_masks.BeamMaskConfig(images=str(tmp_path / "missing"), out=str(tmp_path / "m"))


def test_pipeline_options_reject_a_stray_value():
    with pytest.raises(beam_masks.PipelineOptionsError, match="unexpected pipeline argument 'DirectRunner'"):
        beam_masks.pipeline_options(["DirectRunner"])
    with pytest.raises(beam_masks.PipelineOptionsError, match="unexpected pipeline argument '2'"):
        beam_masks.pipeline_options(["--runner=DirectRunner", "2"])
    explicit = beam_masks.pipeline_options(["--runner", "DirectRunner", "--direct_running_mode", "in_memory"])
    assert explicit.get_all_options()["direct_running_mode"] == "in_memory"  # an explicit mode is kept


def test_merge_qc_keeps_older_rows_and_this_runs_row_wins(tmp_path):
    out = tmp_path / "masks"
    with qc.QCWriter(out / "qc.csv") as writer:
        writer.write([{"stem": "b", "flags": "no_lungs"}, {"stem": "a", "flags": "old"}])
    records = [{"status": "written", "row": {"stem": "a", "flags": "", "height": 5}},
               {"status": "skipped", "row": None},  # recorded by an earlier run
               {"status": "read_error", "row": {"stem": "c", "flags": "read_error", "error": "bad"}}]
    path = beam_masks.merge_qc(out, records)
    assert path == out / "qc.csv" and path.read_text().splitlines()[0] == ",".join(qc.QC_COLUMNS)
    table = qc.read_qc(out).set_index("stem")
    assert list(table.index) == ["a", "b", "c"]
    assert (table.loc["a", "flags"], table.loc["b", "flags"], table.loc["c", "error"]) == ("", "no_lungs", "bad")
    assert int(table.loc["a", "height"]) == 5 and sorted(p.name for p in out.iterdir()) == ["qc.csv"]
