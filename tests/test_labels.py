"""tfcxr.labels: the label vocabulary (TARGETS, NIH_FINDINGS, NO_FINDING) and parse_finding_labels."""

import pytest

from tfcxr.labels import NIH_FINDINGS, NO_FINDING, TARGETS, parse_finding_labels


def test_vocabulary_invariants():
    assert len(TARGETS) == 5 and len(set(TARGETS)) == 5
    assert len(NIH_FINDINGS) == 14 and len(set(NIH_FINDINGS)) == 14
    assert set(TARGETS) <= set(NIH_FINDINGS)  # every target is an NIH finding
    assert NO_FINDING not in NIH_FINDINGS and NO_FINDING not in TARGETS
    assert all("|" not in name for name in NIH_FINDINGS)  # '|' separates names in `Finding Labels`


def test_parse_finding_labels():
    assert parse_finding_labels("Mass|Nodule") == frozenset({"Mass", "Nodule"})
    assert parse_finding_labels(" Edema | Pleural_Thickening ") == frozenset({"Edema", "Pleural_Thickening"})
    assert parse_finding_labels("Hernia|Hernia") == frozenset({"Hernia"})
    assert parse_finding_labels("No Finding") == frozenset()
    assert parse_finding_labels(" No Finding\n") == frozenset()
    assert isinstance(parse_finding_labels("Fibrosis"), frozenset)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", r"empty `Finding Labels` value"),
        ("   ", r"empty `Finding Labels` value"),
        ("Mass|Cancer", r"unknown finding \['Cancer'\] in `Finding Labels`='Mass\|Cancer'"),
        ("mass", r"unknown finding \['mass'\]"),  # names are case-sensitive
        ("Mass||Nodule", r"unknown finding \[''\]"),
        ("Mass|No Finding", r"unknown finding \['No Finding'\]"),  # No Finding only on its own
    ],
)
def test_bad_finding_labels_name_the_source(text, problem):
    with pytest.raises(ValueError, match=r"^Data_Entry_2017.csv, row 7: " + problem):
        parse_finding_labels(text, source="Data_Entry_2017.csv, row 7")


def test_error_lists_the_known_findings():
    with pytest.raises(ValueError) as caught:
        parse_finding_labels("Covid")
    message = str(caught.value)
    assert message.startswith("Finding Labels: ")  # the default source
    assert all(name in message for name in NIH_FINDINGS) and repr(NO_FINDING) in message
