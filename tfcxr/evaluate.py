"""Evaluate finished training runs and write one comparison report.

    python -m tfcxr.evaluate runs/resnet50_original runs/resnet50_tight --out reports/paper

Reads each RUNDIR's config.yaml, test_predictions.csv, history.csv, efficiency.json
and best.keras (Grad-CAM), and writes REPORTDIR/metrics.json, report.md and PNGs
(see `tfcxr.evaluation.report`).
"""

import argparse
import logging

from tfcxr import cli

logger = logging.getLogger(__name__)


def build_parser():
    """The command-line parser of `python -m tfcxr.evaluate`."""
    parser = argparse.ArgumentParser(prog="python -m tfcxr.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUNDIR", help="run directories written by tfcxr.train")
    parser.add_argument("--out", required=True, metavar="REPORTDIR", help="report folder to write")
    parser.add_argument("--bootstrap", type=int, default=1000, help="patient-level bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--ci-level", type=float, default=0.95)
    parser.add_argument("--specificity", type=float, default=0.9, help="operating point for sensitivity")
    parser.add_argument("--no-finding-score", choices=("max", "prod"), default=None,
                        help="No Finding score; default: each run's config, else max")
    parser.add_argument("--require-same-test-set", action=argparse.BooleanOptionalAction, default=True,
                        help="error when runs differ in test images (else skip those DeLong pairs)")
    parser.add_argument("--gradcam-images", type=int, default=4,
                        help="test images in the mask and Grad-CAM grids (0: none)")
    parser.add_argument("--link", action="append", default=[], metavar="KEY+KEY",
                        help="config keys that count as one setting when cells are compared, e.g. "
                             "weights+freeze_backbone_epochs (an experiment's `variant` axis); repeatable")
    parser.add_argument("--title", default="tfcxr evaluation report")
    return cli.add_log_level(parser)


def summary_table(result):
    """Plain-text AUROC table (one row per run) for the terminal."""
    from tfcxr.evaluation.report import COLUMNS, MACRO, _fmt
    from tfcxr.labels import TARGETS

    header = ["run"] + list(TARGETS) + [MACRO, COLUMNS[-1]]
    rows = []
    for r in result["runs"]:
        cells = [_fmt(r["classes"][t]["auroc"]) for t in TARGETS]
        cells += [_fmt(r[MACRO]["auroc"]), _fmt(r["classes"][COLUMNS[-1]]["auroc"])]
        rows.append([r["label"]] + cells)
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [header] + rows)


def run(run_dirs, out, **kwargs):
    """Load `run_dirs`, write the report to `out`, return the metrics dict."""
    from tfcxr.evaluation.report import write_report
    from tfcxr.evaluation.runs import load_runs

    return write_report(load_runs(run_dirs), out, **kwargs)


def main(argv=None):
    """Run `python -m tfcxr.evaluate` with `argv` (default: sys.argv); returns the exit status."""
    args = build_parser().parse_args(argv)
    return cli.run(_main, args, logger)


def _main(args) -> int:
    if args.bootstrap < 1:
        raise ValueError(f"--bootstrap must be >= 1. Received: {args.bootstrap}")
    result = run(args.run_dirs, args.out, num_resamples=args.bootstrap, seed=args.seed,
                 ci_level=args.ci_level, specificity=args.specificity, no_finding_score=args.no_finding_score,
                 require_same_test_set=args.require_same_test_set, gradcam_images=args.gradcam_images,
                 title=args.title, linked=[link.split("+") for link in args.link])
    print(summary_table(result))
    print(f"Report: {args.out}/report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
