"""The report's score columns: the targets then No Finding, the macro key, and the No Finding score."""

import numpy as np

from tfcxr.labels import NO_FINDING, TARGETS

MACRO = "macro"
COLUMNS = TARGETS + (NO_FINDING,)  # bootstrap columns: the 5 targets, then No Finding


def no_finding_scores(probs, method):
    """(N,) float64 No Finding score of (N, 5) target probabilities ("max" or "prod")."""
    from tfcxr.scoring import no_finding_score

    return np.asarray(no_finding_score(np.asarray(probs, dtype=np.float64), method), dtype=np.float64)
