"""The report's number formatters and markdown sections, on hand-made metrics."""

import math

from tfcxr.evaluation import report, report_markdown
from tfcxr.evaluation.report_markdown import fmt, fmt_ci, fmt_p, fmt_spread


def test_formatters_write_n_a_for_missing_values():
    assert fmt(0.81234) == "0.812" and fmt(1.25, 1) == "1.2" and fmt(None) == fmt(math.nan) == "n/a"
    assert fmt_ci({"auroc": 0.8, "auroc_ci": [0.7, math.nan]}) == "0.800 (0.700-n/a)"
    assert fmt_ci({"auprc": None, "auprc_ci": [0.1, 0.2]}, "auprc") == "n/a"
    assert fmt_p(0.0004) == "<0.001" and fmt_p(0.25) == "0.250" and fmt_p(None) == "n/a"


def test_spread_shows_the_value_alone_for_one_seed():
    assert fmt_spread({"n": 0}) == fmt_spread(None) == "n/a"
    assert fmt_spread({"n": 1, "mean": 0.7}) == "0.700"
    assert fmt_spread({"n": 3, "mean": 0.7, "sd": 0.01, "min": 0.69, "max": 0.71}) == "0.700 ± 0.010 (0.690 to 0.710)"


def test_report_keeps_the_formatter_that_evaluate_imports():
    assert report._fmt is fmt and report.MACRO == "macro" and report.COLUMNS[-1] == "No Finding"


def test_sections_absent_without_comparisons_or_notes():
    assert report_markdown._comparisons_section([]) == []
    assert report_markdown._notes_figures_section([], [], []) == []
    assert report_markdown._probe_markdown([]) == [] and report_markdown._seed_markdown([], []) == []
