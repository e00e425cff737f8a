"""Tests for tfcxr.segment.evaluate: Dice, IoU and HD95 of a segmenter on labelled pairs, per prompt strategy."""

import json
import math

import cv2
import numpy as np
import pytest

from tfcxr.segment import evaluate


def test_evaluate_cli_json(tmp_path):
    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    mask = np.zeros((64, 64), np.uint8)
    mask[10:50, 8:28] = 255
    mask[10:50, 36:56] = 255
    cv2.imwrite(str(root / "images" / "x.png"), (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    cv2.imwrite(str(root / "masks" / "x.png"), mask)
    out = tmp_path / "results.json"
    assert evaluate.main(["--data", str(root), "--model", "tiny", "--prompt", "gt", "refine", "--out", str(out),
                          "--worst", "2"]) == 0
    result = json.loads(out.read_text())
    for prompt in ("gt", "refine"):
        grid = cv2.imread(str(tmp_path / f"results_worst_{prompt}.png"))
        red = (grid[..., 2] == 255) & (grid[..., 1] == 0) & (grid[..., 0] == 0)
        assert grid.shape[:2] == (192, 192) and red.sum() > 50  # one image; the ground truth outlined in red
    assert "worst_tiles" not in result["prompts"]["gt"]
    assert result["n"] == 1 and set(result["prompts"]) == {"gt", "refine"}
    summary = result["prompts"]["gt"]["summary"]
    assert 0.0 <= summary["mean_dice"] <= 1.0 and set(result["prompts"]["gt"]["per_image"][0]) == {
        "name", "dice", "iou", "hd95"}


def test_summarize_skips_infinite_hd95_and_counts_it():
    rows = [{"dice": 0.5, "iou": 0.25, "hd95": 2.0}, {"dice": 0.9, "iou": 0.8, "hd95": math.inf},
            {"dice": 1.0, "iou": 1.0, "hd95": 4.0}]
    summary = evaluate.summarize(rows)
    assert summary["n"] == 3 and summary["hd95_infinite"] == 1
    assert summary["mean_dice"] == pytest.approx(0.8) and summary["median_dice"] == pytest.approx(0.9)
    assert summary["mean_hd95"] == pytest.approx(3.0) and summary["median_hd95"] == pytest.approx(3.0)
    empty = evaluate.summarize([{"dice": 0.0, "iou": 0.0, "hd95": math.inf}])
    assert empty["mean_hd95"] is None and empty["median_hd95"] is None and empty["hd95_infinite"] == 1
    assert json.loads(json.dumps(evaluate._json_safe([{"name": "x", "hd95": math.inf, "dice": 0.5}]))) == [
        {"name": "x", "hd95": None, "dice": 0.5}]  # strict JSON: no Infinity


def test_evaluate_shares_embeddings_scores_each_mask_and_orders_the_worst(monkeypatch):
    from tfcxr.data.pairs import Pair
    from tfcxr.segment import load_segmenter, metrics

    rng = np.random.default_rng(0)
    pairs = []
    for i, (h, w) in enumerate([(64, 64), (48, 72), (80, 56)]):
        mask = np.zeros((h, w), bool)
        mask[h // 5 : 4 * h // 5, w // 8 : 3 * w // 8] = True
        mask[h // 5 : 4 * h // 5, 5 * w // 8 : 7 * w // 8] = True
        pairs.append(Pair(f"p{i}", (rng.random((h, w, 1)) * 0.3 + mask[..., None] * 0.6).astype(np.float32), mask))
    model = load_segmenter("tiny")
    calls = []
    embed = model.embed
    monkeypatch.setattr(model, "embed", lambda pixel_values: calls.append(len(pixel_values)) or embed(pixel_values))
    results = evaluate.evaluate(model, pairs, prompts=("gt", "prior"), batch_size=2, worst=2, keep_masks=True)
    assert sorted(calls) == [1, 2]  # 3 images embedded once in batches of 2, shared by both prompts
    assert set(results) == {"gt", "prior"}
    for prompt, result in results.items():
        rows = result["per_image"]
        assert [row["name"] for row in rows] == ["p0", "p1", "p2"]
        assert [m.shape for m in result["masks"]] == [p.mask.shape for p in pairs] and len(result["stability"]) == 3
        for row, mask, pair in zip(rows, result["masks"], pairs):
            assert row["dice"] == pytest.approx(metrics.dice(mask, pair.mask))  # scored at the source size
        assert result["summary"]["n"] == 3
        assert result["summary"]["mean_dice"] == pytest.approx(np.mean([row["dice"] for row in rows]))
        lowest = sorted(rows, key=lambda row: row["dice"])[:2]
        assert [caption for caption, _ in result["worst_tiles"]] == [
            f"{row['name']} {row['dice']:.3f}" for row in lowest]
        assert all(tile.shape == (192, 192, 3) and tile.dtype == np.uint8 for _, tile in result["worst_tiles"])
    plain = evaluate.evaluate(model, pairs[:1], prompts=("prior",))
    assert set(plain["prior"]) == {"summary", "per_image"}  # masks and tiles only when asked for
