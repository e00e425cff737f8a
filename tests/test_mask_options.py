"""tfcxr.mask_options: margin parsing and canonical forms, mode and fill validation."""

import pytest

from tfcxr.mask_options import canonical_margin, parse_margin, validate_fill, validate_mask_mode


def test_margin_parsing_and_validation_errors():
    assert parse_margin(0.05) == ("fraction", 0.05)
    assert parse_margin("11px") == ("px", 11)
    assert parse_margin(11) == ("px", 11)
    assert parse_margin("0.1") == ("fraction", 0.1)
    assert canonical_margin("11") == canonical_margin(11) == "11px" and canonical_margin("0.05") == 0.05
    with pytest.raises(ValueError, match="Received: margin=1.5"):
        parse_margin(1.5)
    with pytest.raises(ValueError, match="Received: margin='wide'"):
        parse_margin("wide")
    with pytest.raises(ValueError, match="Received: margin=True"):
        parse_margin(True)
    assert validate_mask_mode("inverse") == "inverse" and validate_fill("mean") == "mean"
    with pytest.raises(ValueError, match=r"Received: mask='lose'"):
        validate_mask_mode("lose")
    with pytest.raises(ValueError, match=r"Received: fill='white'"):
        validate_fill("white")
