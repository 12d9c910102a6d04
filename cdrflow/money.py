"""Money is Decimal, end to end; never float.

Amounts are stored in the database as integer *micros* (millionths of the
currency unit) so SQLite and PostgreSQL hold them exactly; on the bus they
travel as decimal strings ("12.3400").
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICROS = Decimal(1_000_000)
ZERO = Decimal(0)


class MoneyError(ValueError):
    """A value can't be an exact amount of money."""


def to_money(value: str | int | Decimal) -> Decimal:
    """Parse an amount exactly; floats are refused because they are already inexact."""
    if isinstance(value, float):
        raise MoneyError(f"refusing float {value!r} as money: pass a string or Decimal")
    try:
        amount = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation as exc:
        raise MoneyError(f"not an amount: {value!r}") from exc
    if not amount.is_finite():
        raise MoneyError(f"not a finite amount: {value!r}")
    return amount


def round_money(amount: Decimal, places: int = 4, rounding: str = ROUND_HALF_UP) -> Decimal:
    """Round once, explicitly: half-up to 4 places unless a tariff says otherwise."""
    return amount.quantize(Decimal(1).scaleb(-places), rounding=rounding)


def to_micros(amount: Decimal) -> int:
    """Decimal → integer millionths; refuses amounts finer than a millionth (no silent rounding)."""
    micros = amount * MICROS
    if micros != micros.to_integral_value():
        raise MoneyError(f"{amount} has more than 6 decimal places")
    return int(micros)


def from_micros(micros: int) -> Decimal:
    return (Decimal(micros) / MICROS).quantize(Decimal("0.000001"))


def format_money(amount: Decimal, places: int = 4) -> str:
    """The string form used on the bus and in CSV: fixed places, no exponent."""
    return f"{round_money(amount, places):f}"
