"""Markdown of the report: the number formatters, one function per section, and `markdown`.

Everything here renders the metrics dict of `tfcxr.evaluation.report.evaluate_runs`;
nothing is computed.
"""

import math

from tfcxr.evaluation.columns import COLUMNS, MACRO
from tfcxr.labels import NO_FINDING, TARGETS


def fmt(value, digits=3):
    """`value` with `digits` decimals; "n/a" for None or NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_ci(entry, metric="auroc"):
    """`entry[metric]` with its CI, as "0.812 (0.790-0.833)"."""
    value = entry[metric]
    if value is None or not math.isfinite(value):
        return "n/a"
    low, high = entry[f"{metric}_ci"]
    return f"{value:.3f} ({fmt(low)}-{fmt(high)})"


def fmt_p(p):
    """A p-value with 3 decimals, "<0.001" below that."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def table_header(*columns):
    """A markdown table's header and delimiter lines, with one delimiter cell per column."""
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def markdown(result, figures, notes, title):
    """report.md of the metrics dict `result`, its `figures` ((caption, path) pairs) and `notes`."""
    lines = [f"# {title}", ""]
    lines += _auroc_section(result)
    lines += _probe_markdown(result.get("shortcut_probe") or [])
    lines += _seed_markdown(result.get("cells") or [], result.get("cell_comparisons") or [])
    lines += _auprc_sensitivity_section(result)
    lines += _comparisons_section(result["comparisons"])
    lines += _efficiency_section(result["runs"])
    lines += _notes_figures_section(result["runs"], figures, notes)
    return "\n".join(lines).rstrip() + "\n"


def _auroc_section(result):
    """The test set, the CI method and the AUROC table (one row per run)."""
    boot = result["settings"]["bootstrap"]
    runs = result["runs"]
    first = runs[0]
    pos = ", ".join(f"{name} {first['classes'][name]['positives']}" for name in COLUMNS)
    lines = [
        f"Test set of `{first['name']}`: {first['n_images']} images, {first['n_patients']} patients; "
        f"positives: {pos}.",
        f"95% CIs: patient-level bootstrap ({boot['num_resamples']} resamples, seed {boot['seed']}, "
        f"percentile). Macro = mean AUROC over the targets defined in the test set. "
        f"No Finding score = 1 - max_k p_k (`max`) or prod_k (1 - p_k) (`prod`), against NIH's No Finding label.",
        "",
        "## Mask-mode comparison: AUROC (95% CI)",
        "",
        *table_header("run (backbone / mask)", "test images (patients)", *TARGETS, "macro", "No Finding"),
    ]
    for r in runs:
        cells = [fmt_ci(r["classes"][t]) for t in TARGETS] + [fmt_ci(r[MACRO]), fmt_ci(r["classes"][NO_FINDING])]
        lines.append(f"| {r['label']} | {r['n_images']} ({r['n_patients']}) | " + " | ".join(cells) + " |")
    return lines


def _auprc_sensitivity_section(result):
    """AUPRC table, then sensitivity at the operating specificity."""
    runs = result["runs"]
    lines = ["", "## AUPRC (95% CI)", "",
             *table_header("run", *TARGETS, "macro", "No Finding")]
    for r in runs:
        cells = [fmt_ci(r["classes"][t], "auprc") for t in TARGETS]
        cells += [fmt_ci(r[MACRO], "auprc"), fmt_ci(r["classes"][NO_FINDING], "auprc")]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    spec = result["settings"]["specificity"]
    lines += ["", f"## Sensitivity at {spec:.0%} specificity", "",
              *table_header("run", *COLUMNS)]
    for r in runs:
        lines.append(f"| {r['label']} | " + " | ".join(fmt(r["classes"][c]["sensitivity_at_spec"]) for c in COLUMNS) + " |")
    return lines


def _comparisons_section(comparisons):
    """Paired run comparisons: DeLong p per column, bootstrap macro difference (none: no section)."""
    if not comparisons:
        return []
    lines = ["", "## Paired comparisons (DeLong p-values; macro: paired bootstrap)", "",
             "DeLong's covariance is clustered by patient (Obuchowski 1997), so follow-up images of one patient "
             "do not count as independent; the bootstrap resamples patients.", "",
             *table_header("run A", "run B", *COLUMNS, "macro diff A-B (95% CI)", "macro p")]
    for c in comparisons:
        if "skipped" in c:
            lines.append(f"| {c['run_a']} | {c['run_b']} | skipped: {c['skipped']} |")
            continue
        ps = [fmt_p(c["delong"][name]["p_value"]) for name in COLUMNS]
        low, high = c["macro_auroc_diff_ci"]
        lines.append(f"| {c['label_a']} | {c['label_b']} | " + " | ".join(ps)
                     + f" | {fmt(c['macro_auroc_diff'])} ({fmt(low)} to {fmt(high)}) | "
                     + f"{fmt_p(c['macro_auroc_diff_bootstrap_p'])} |")
    lines.append("")
    lines.append(f"{len(comparisons)} pairwise comparisons, not corrected for multiple testing.")
    return lines


def _efficiency_section(runs):
    """Training efficiency of each run (efficiency.json and the best epoch)."""
    lines = ["", "## Training efficiency", "",
             *table_header("run", "device", "precision", "s/epoch", "train img/s", "epochs run",
                           "epochs to best val AUROC", "best val AUROC")]
    for r in runs:
        e = r["efficiency"]
        lines.append(
            f"| {r['label']} | {e.get('device', 'n/a')} | {e.get('precision', 'n/a')} | "
            f"{fmt(e.get('seconds_per_epoch'), 1)} | {fmt(e.get('train_images_per_second'), 1)} | "
            f"{e.get('epochs_run', 'n/a')} | {e.get('epochs_to_best') or 'n/a'} | {fmt(e.get('best_val_auroc'))} |")
    return lines


def _notes_figures_section(runs, figures, notes):
    """Undefined AUROCs and other notes, then the figures (each absent when empty)."""
    lines = []
    undefined = [(r["label"], name, r["classes"][name]["undefined"]) for r in runs for name in COLUMNS
                 if r["classes"][name]["undefined"]]
    if undefined or notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {label}: {name} AUROC undefined: {reason}." for label, name, reason in undefined]
        lines += [f"- {note}" for note in notes]
    if figures:
        lines += ["", "## Figures", ""]
        for caption, path in figures:
            lines += [f"**{caption}**", "", f"![{caption}]({path.name})", ""]
    return lines


def fmt_spread(spread):
    """A `_spread` dict as "mean ± SD (min to max)"; the value alone for one seed."""
    if not spread or spread.get("n", 0) == 0:
        return "n/a"
    if spread["n"] == 1:
        return fmt(spread["mean"])
    return f"{spread['mean']:.3f} ± {fmt(spread['sd'])} ({spread['min']:.3f} to {spread['max']:.3f})"


def _fmt_seed_values(per_seed, key):
    return "; ".join(f"s{e['seed']}: {fmt_ci({'auroc': e[key], 'auroc_ci': e[key + '_ci']})}" for e in per_seed)


def _probe_markdown(probe):
    """The shortcut-probe section: AUROC of inverse / original / tight per backbone, their paired tests."""
    if not probe:
        return []
    lines = ["", "## Shortcut probe: inverse vs original vs tight", "", probe[0]["interpretation"], ""]
    for entry in probe:
        lines += [f"### {entry['context']}", "",
                  *table_header("mask", "seeds", *TARGETS, "macro", "No Finding")]
        for mode in entry["modes"]:
            auroc = entry["auroc"][mode]
            per_seed = auroc["per_seed"]
            if len(per_seed) == 1:  # one seed: the value with its patient-level CI
                only = per_seed[0]
                macro = fmt_ci({"auroc": only["macro_auroc"], "auroc_ci": only["macro_auroc_ci"]})
                nf = fmt_ci({"auroc": only["no_finding_auroc"], "auroc_ci": only["no_finding_auroc_ci"]})
            else:
                macro, nf = fmt_spread(auroc["macro"]), fmt_spread(auroc["no_finding"])
            classes = [fmt_spread(auroc["classes"][t]) for t in TARGETS]
            lines.append(f"| {mode} | {len(per_seed)} | " + " | ".join(classes) + f" | {macro} | {nf} |")
        share = entry.get("inverse_share_of_original_margin")
        if share is not None and math.isfinite(share):
            lines += ["", f"`inverse` keeps {share:.0%} of the `original` macro AUROC's margin above chance "
                          "((inverse - 0.5) / (original - 0.5))."]
        if entry["tests"]:
            lines += ["", *table_header("A", "B", "seeds", "macro diff A-B", "DeLong p per seed: " + ", ".join(COLUMNS),
                                        "macro p per seed (bootstrap)", "over seeds: t-test p, Wilcoxon p")]
            for t in entry["tests"]:
                delong_cells = " / ".join(", ".join(fmt_p(e["delong_p"][c]) for c in COLUMNS) for e in t["per_seed"])
                boot = ", ".join(fmt_p(e["macro_bootstrap_p"]) for e in t["per_seed"])
                over = t["macro_auroc_diff"]
                seeds_p = f"{fmt_p(over['t_test_p'])}, {fmt_p(over['wilcoxon_p'])}" if over["n"] > 1 else "n/a (one seed)"
                lines.append(f"| {t['mode_a']} | {t['mode_b']} | {len(t['seeds'])} | {fmt_spread(over)} | "
                             f"{delong_cells} | {boot} | {seeds_p} |")
        lines.append("")
    return lines


def _seed_markdown(cells, cell_comparisons):
    """Seed variance per cell and the cell comparisons over seeds (only when a cell has several seeds)."""
    if not any(len(c["per_seed"]) > 1 for c in cells):
        return []
    lines = ["", "## Seed variance per cell (test AUROC)", "",
             "Mean ± SD (min to max) over the training seeds; per seed the value and its patient-level 95% CI. "
             "Choose settings on the validation column (each run's best-epoch validation macro AUROC), not on "
             "the test.", "",
             *table_header("cell", "seeds", "validation macro (best epoch): mean ± SD (min to max)",
                           "macro: mean ± SD (min to max)", "macro per seed (95% CI)",
                           "No Finding: mean ± SD (min to max)", "No Finding per seed (95% CI)")]
    for c in cells:
        validation = fmt_spread(c["best_val_auroc"]) if "best_val_auroc" in c else "n/a"
        lines.append(f"| {c['label']} | {len(c['per_seed'])} | {validation} | {fmt_spread(c['macro_auroc'])} | "
                     f"{_fmt_seed_values(c['per_seed'], 'macro_auroc')} | {fmt_spread(c['no_finding_auroc'])} | "
                     f"{_fmt_seed_values(c['per_seed'], 'no_finding_auroc')} |")
    if cell_comparisons:
        lines += ["", "## Cell comparisons over seeds", "",
                  "Cells that differ in one setting, paired by seed. Seed variance: paired t-test and Wilcoxon "
                  "signed-rank test of the per-seed differences (training variance only: every seed shares one test set), "
                  "and a 95% t interval whose variance adds that seed term to the patient-bootstrap variance of the "
                  "seed-averaged difference (Welch-Satterthwaite df: from 1.96 standard errors each side up to 4.30 with 3 "
                  "seeds when the seed term dominates). "
                  "Per seed: DeLong p of No Finding and the patient-bootstrap p of the macro difference.", "",
                  *table_header("cell A", "cell B", "differs in", "seeds", "macro diff A-B: mean ± SD (min to max)",
                                "t-test p", "Wilcoxon p", "seeds + patients 95% CI, p",
                                "No Finding diff: mean ± SD", "t-test p", "per seed: No Finding DeLong p",
                                "per seed: macro bootstrap p")]
        for c in cell_comparisons:
            m, nf = c["macro_auroc_diff"], c["no_finding_auroc_diff"]
            both = c["macro_auroc_diff_seeds_patients"]
            low, high = both["ci"]
            lines.append(
                f"| {c['cell_a']} | {c['cell_b']} | {', '.join(c['differs_in']) or '-'} | {len(c['seeds'])} | "
                f"{fmt_spread(m)} | {fmt_p(m['t_test_p'])} | {fmt_p(m['wilcoxon_p'])} | "
                f"{fmt(low)} to {fmt(high)}, {fmt_p(both['p'])} | {fmt_spread(nf)} | "
                f"{fmt_p(nf['t_test_p'])} | "
                + ", ".join(fmt_p(e["delong_p"][NO_FINDING]) for e in c["per_seed"]) + " | "
                + ", ".join(fmt_p(e["macro_bootstrap_p"]) for e in c["per_seed"]) + " |")
        floors = "; ".join(f"with {n} seeds {2.0 ** (1 - n):.3g}"
                           for n in sorted({len(c["seeds"]) for c in cell_comparisons}))
        lines += ["", f"{len(cell_comparisons)} cell comparisons, not corrected for multiple testing. "
                      f"The smallest two-sided exact Wilcoxon p: {floors}."]
    return lines
