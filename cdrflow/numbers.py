"""Phone numbers normalised to E.164 digits (no '+'), so CLIs on CDRs match CLIs on customers."""

from __future__ import annotations


def normalise_number(raw: str, country_code: str = "44") -> str:
    """'+44 1632 960001', '00441632960001' and '01632 960001' all become '441632960001'.

    Anything that is not a phone number (an account or trunk code) comes back stripped
    but otherwise unchanged, so it can still match a customer's code exactly.
    """
    compact = "".join(ch for ch in raw.strip() if ch not in " -()")
    if compact.startswith("+"):
        digits = compact[1:]
    elif compact.startswith("00"):
        digits = compact[2:]
    elif compact.startswith("0"):
        digits = country_code + compact[1:]
    else:
        digits = compact
    return digits if digits.isdigit() else raw.strip()
