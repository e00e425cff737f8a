"""One synthetic radiograph and its exact lung mask, from a case's seeds.

The image is the patient's finding-free anatomy (`tfcxr.data.phantom_anatomy`, shifted per follow-up), plus the
findings multiplied by the hard lung mask (`tfcxr.data.phantom_findings`), plus distractors and, on some cases, an
endotracheal tube outside the lungs (`tfcxr.data.phantom_distractors`), plus pixel noise, then the patient's gamma.
Each part draws from its own seeded stream, `numpy.random.default_rng([seed, stream, index])`:

    1 anatomy parameters (per patient)   2 vessel texture (per patient)   3 findings
    4 distractors                        5 noise                          6 follow-up shift
    8 the tube's course (stream 7 is the tube draw of `tfcxr.data.synthetic.sample_cases`)
"""

import numpy as np

from tfcxr.data.phantom_anatomy import draw_anatomy, patient_anatomy, shift_anatomy
from tfcxr.data.phantom_distractors import draw_distractors, draw_tube
from tfcxr.data.phantom_findings import draw_findings


def render_case(case, config, findings=None, return_boxes=False):
    """Draw one synthetic radiograph and its exact lung mask.

    Args:
        case: a `tfcxr.data.synthetic.Case` (index, patient_id, view, findings, tube).
        config: the `tfcxr.data.synthetic.SyntheticConfig` (image size, seed, noise, distractors).
        findings: override `case.findings` (e.g. `()` for the same image without
            findings: identical pixels outside the lung mask).
        return_boxes: also return NIH-style boxes.

    Returns:
        image: uint8 (S, S) gray radiograph.
        mask: bool (S, S), True inside either lung.
        boxes (only with `return_boxes`): list of (label, x, y, w, h) in pixels.
    """
    size = int(config.image_size)
    findings = case.findings if findings is None else tuple(findings)
    # Follow-ups share the patient's anatomy, shifted by a few pixels (positioning).
    base, union, lungs = draw_anatomy(int(config.seed), case.patient_id, case.view, size)
    shift_rng = np.random.default_rng([config.seed, 6, case.index])
    reach = max(1, round(0.015 * size))
    base, union, lungs = shift_anatomy(base, union, lungs, *shift_rng.integers(-reach, reach + 1, size=2))
    layer, boxes = draw_findings(findings, lungs, size, np.random.default_rng([config.seed, 3, case.index]))
    image = base + layer * union
    if config.distractors:
        image += draw_distractors(case.view, union, size, np.random.default_rng([config.seed, 4, case.index]))
    if case.tube:
        image += draw_tube(union, size, np.random.default_rng([config.seed, 8, case.index]))
    noise_rng = np.random.default_rng([config.seed, 5, case.index])
    image += config.noise_std * noise_rng.standard_normal((size, size), dtype=np.float32)
    # AP films: a little less contrast. Gamma through a lookup table (fast).
    contrast = 0.9 if case.view == "AP" else 1.0
    levels = np.linspace(0.0, 1.0, 4096) ** patient_anatomy(int(config.seed), case.patient_id)["gamma"]
    lut = np.round(levels * 255).astype(np.uint8)
    image = lut[(np.clip(image * contrast, 0, 1) * 4095 + 0.5).astype(np.int32)]
    mask = union.astype(bool)
    if return_boxes:
        return image, mask, boxes
    return image, mask
