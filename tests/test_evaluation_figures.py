"""Which test images the report's image grids show, and the ROC file names."""

import numpy as np

from evaluation_fakes import make_run, write_images
from tfcxr.evaluation import figures
from tfcxr.evaluation.runs import load_run
from tfcxr.labels import TARGETS


def test_examples_take_one_positive_per_target_then_others(tmp_path):
    image_paths, mask_paths = write_images(tmp_path / "img", num_images=8)
    labels = np.zeros((8, len(TARGETS)), int)
    labels[3, 1] = labels[5, 0] = 1
    run = load_run(make_run(tmp_path / "r", image_paths, mask_paths, labels=labels, model=False))
    rows, explain = figures._pick_examples(run, 3)
    df = run.predictions
    assert df.loc[rows[0], f"y_{TARGETS[0]}"] == 1 and df.loc[rows[1], f"y_{TARGETS[1]}"] == 1
    assert explain == [0, 1, None] and len(set(rows)) == 3
    assert figures._safe_name("a b/c-1.x") == "a_b_c-1.x"
