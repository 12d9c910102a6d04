"""Charges defined in cdrflow itself (``cdrflow charges``, ``/customers/{code}/charges``):
recurring (monthly, quarterly, yearly) or one-off (``once``, due on its start day), per
customer. What a billing run bills of them is ``services.invoicer.recurring.charges_due``; this
module only checks and stores them, with every change in the reference change log.

Everything an operator types is checked here, each problem with its own message: the amount
is exact decimal text (never a float), the dates are YYYY-MM-DD, the end (exclusive, the first
day no longer charged) is after the start, the tax code is one the invoice knows."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdrflow.db.models import Customer, CustomerCharge
from cdrflow.errors import InputError
from cdrflow.reference import record_change
from services.invoicer.recurring import FREQUENCIES, OneOffCharge, RecurringCharge
from services.invoicer.tax import UK_RATES
from services.scheduler.runs import UnknownCustomerError

ONCE = "once"
CHARGE_FREQUENCIES = (*FREQUENCIES, ONCE)
_AMOUNT = re.compile(r"^-?\d{1,12}(\.\d{1,6})?$")
DESCRIPTION_MAX = 200


class UnknownChargeError(InputError):
    """A command names a charge id that does not exist."""

    def __init__(self, charge_id: object) -> None:
        self.charge_id = charge_id
        super().__init__(f"no charge {charge_id!r}: 'cdrflow charges list' shows the charges and their ids")


def parse_amount(text: object) -> Decimal:
    """An amount in the customer's currency as exact decimal text: ``12.50``, ``-5``; at most 6
    decimal places. A JSON number is refused: it may already be a float, which is inexact."""
    if not isinstance(text, str):
        raise InputError(f"amount {text!r} must be given as decimal text such as \"12.50\", not a number "
                         "(a float is not exact money)")
    if not _AMOUNT.match(text.strip()):
        raise InputError(f"amount {text!r} is not a plain decimal amount such as 12.50 or -5.00 "
                         "(digits, an optional minus and point, at most 6 decimal places; no currency sign)")
    return Decimal(text.strip())


def parse_day(text: object, what: str) -> date:
    if isinstance(text, date):
        return text
    if not isinstance(text, str):
        raise InputError(f"{what} {text!r} is not a date YYYY-MM-DD")
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise InputError(f"{what} {text!r} is not a date YYYY-MM-DD ({exc})") from exc


def parse_quantity(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"quantity {value!r} is not a whole number of at least 1 "
                         "(a credit is a negative amount, not a negative quantity)")
    return value


def check_tax_code(code: str | None) -> str | None:
    if code is None or code == "":
        return None
    if code not in UK_RATES:
        raise InputError(f"tax code {code!r} is not one of {', '.join(UK_RATES)} (leave it out to use the customer's)")
    return code


def add_charge(session: Session, *, customer: str, description: str, amount: str, frequency: str, start: str | date,
               end: str | date | None = None, quantity: object = 1, tax_code: str | None = None,
               created_by: str) -> CustomerCharge:
    """Check and store a charge; nothing is stored if any part is wrong."""
    if session.get(Customer, customer) is None:
        raise UnknownCustomerError(customer)
    description = (description or "").strip()
    if len(description) > DESCRIPTION_MAX:
        raise InputError(f"description of {len(description)} characters is over the limit of {DESCRIPTION_MAX}")
    if frequency not in CHARGE_FREQUENCIES:
        raise InputError(f"frequency {frequency!r} is not one of {', '.join(CHARGE_FREQUENCIES)}")
    money, first = parse_amount(amount), parse_day(start, "start")
    last = None if end in (None, "") else parse_day(end, "end")
    count = parse_quantity(quantity)
    # The billing library's own checks (description, end after start), so what is stored is billable.
    if frequency == ONCE:
        if last is not None:
            raise InputError("a one-off charge (frequency once) is billed once, on its start day: it has no end")
        OneOffCharge(description, money, first, count)
    else:
        RecurringCharge(description, money, frequency, first, last, count)
    row = CustomerCharge(customer=customer, description=description, amount=money, quantity=count,
                         frequency=frequency, start=first, end=last, tax_code=check_tax_code(tax_code),
                         created_at=datetime.now(UTC), created_by=created_by)
    session.add(row)
    session.flush()
    record_change(session, "charge", str(row.id), "added",
                  f"{customer}: {description}, {money} x {count} {frequency} from {first}"
                  + (f" to {last}" if last else "") + f", by {created_by}")
    return row


def end_charge(session: Session, charge_id: int | str, *, on: str | date, reason: str, operator: str) -> CustomerCharge:
    """End a recurring charge on ``on`` (exclusive: the first day no longer charged). Days already
    billed past it are credited at the next run (docs/billing-schedules.md, rule 2)."""
    try:
        charge = session.get(CustomerCharge, int(charge_id))
    except (TypeError, ValueError):
        raise UnknownChargeError(charge_id) from None
    if charge is None:
        raise UnknownChargeError(charge_id)
    if not (reason or "").strip():
        raise InputError(f"ending charge {charge.id} needs a reason; it is kept in the change log")
    last = parse_day(on, "end")
    if charge.frequency == ONCE:
        raise InputError(f"charge {charge.id} ({charge.description}) is a one-off charge: it has no end")
    if last <= charge.start:
        raise InputError(f"charge {charge.id} starts on {charge.start}: its end {last} must be after the start "
                         "(the end is the first day no longer charged)")
    charge.end = last
    record_change(session, "charge", str(charge.id), "changed", f"ended on {last} by {operator}: {reason.strip()}")
    return charge


def list_charges(session: Session, customer: str | None = None) -> list[CustomerCharge]:
    stmt = select(CustomerCharge).order_by(CustomerCharge.customer, CustomerCharge.id)
    if customer:
        if session.get(Customer, customer) is None:
            raise UnknownCustomerError(customer)
        stmt = stmt.where(CustomerCharge.customer == customer)
    return list(session.scalars(stmt))


def charge_view(charge: CustomerCharge) -> dict[str, object]:
    def day(d: date | None) -> str | None:
        return d.isoformat() if d else None

    return {"id": charge.id, "customer": charge.customer, "description": charge.description,
            "amount": plain_amount(charge.amount), "quantity": charge.quantity, "frequency": charge.frequency,
            "start": day(charge.start), "end": day(charge.end), "billed_until": day(charge.billed_until),
            "tax_code": charge.tax_code, "created_at": charge.created_at.isoformat(), "created_by": charge.created_by}


def plain_amount(amount: Decimal) -> str:
    """An amount as people write it: at least 2 decimal places, no trailing zeros past them."""
    shown = amount.normalize()
    if shown.as_tuple().exponent > -2:  # type: ignore[operator]
        shown = shown.quantize(Decimal("0.01"))
    return f"{shown:f}"
