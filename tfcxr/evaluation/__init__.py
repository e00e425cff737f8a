"""Evaluation of classifier runs: metrics, patient bootstrap CIs, DeLong tests, plots, Grad-CAM, reports.

Modules are imported explicitly (`from tfcxr.evaluation import metrics`); this
package imports nothing heavy at import time.
"""
