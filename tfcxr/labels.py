"""The one label vocabulary of tfcxr.

`TARGETS` is the order of the classifier's sigmoid outputs everywhere: label
matrices, model heads, prediction CSVs and the serving signature.
"""

TARGETS = ("Mass", "Nodule", "Pneumonia", "Edema", "Fibrosis")
NO_FINDING = "No Finding"

# The fourteen findings of NIH ChestX-ray14 (Wang et al., CVPR 2017).
NIH_FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)


def parse_finding_labels(finding_labels, source="Finding Labels"):
    """Split an NIH `Finding Labels` string into a set of finding names.

    Args:
        finding_labels: `str` such as `"Mass|Nodule"` or `"No Finding"`.
        source: where the string came from (file and row), echoed in errors.

    Returns:
        `frozenset` of names from `NIH_FINDINGS`, empty for `"No Finding"`.

    Raises:
        ValueError: for an empty string or a name outside the vocabulary.
    """
    text = str(finding_labels).strip()
    if not text:
        raise ValueError(f"{source}: empty `Finding Labels` value.")
    if text == NO_FINDING:
        return frozenset()
    names = [name.strip() for name in text.split("|")]
    unknown = sorted(set(names) - set(NIH_FINDINGS))
    if unknown or NO_FINDING in names:
        raise ValueError(
            f"{source}: unknown finding {unknown or [NO_FINDING]} in "
            f"`Finding Labels`={text!r}. Known findings: {', '.join(NIH_FINDINGS)} "
            f"or exactly {NO_FINDING!r}."
        )
    return frozenset(names)
