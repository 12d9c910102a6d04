"""A customer's billing terms: schedule, tax, currency, address, billing email, payment terms
(``cdrflow customers add|edit``, ``PUT /customers/{code}``). Each is checked on its own, with
its own message, and stored in canonical form (``monthly:1`` is stored ``monthly``)."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from cdrflow.db.models import Customer
from cdrflow.errors import InputError
from cdrflow.reference import record_change
from services.invoicer.periods import BillingSchedule
from services.invoicer.tax import CURRENCIES, UK_RATES, UnknownCurrencyError, currency

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ADDRESS_MAX = 500
TERMS_MAX_DAYS = 365


def set_billing_terms(session: Session, customer: Customer, *, schedule: str | None = None,
                      tax_code: str | None = None, currency_code: str | None = None, address: str | None = None,
                      email: str | None = None, terms_days: int | None = None) -> list[str]:
    """Change the terms given (``None``: unchanged); returns what changed, for the change log.
    Everything is checked before anything is set, so a bad value changes nothing."""
    changes: dict[str, object] = {}
    if schedule is not None:
        changes["billing_schedule"] = str(BillingSchedule.parse(schedule))
    if tax_code is not None:
        if tax_code not in UK_RATES:
            raise InputError(f"customer {customer.code}: tax {tax_code!r} is not one of {', '.join(UK_RATES)} "
                             "(standard: UK VAT 20%)")
        changes["tax_code"] = tax_code
    if currency_code is not None:
        try:
            changes["currency"] = currency(currency_code).code
        except UnknownCurrencyError:
            raise InputError(f"customer {customer.code}: currency {currency_code!r} is not one cdrflow invoices in: "
                             f"use one of {', '.join(CURRENCIES)}") from None
    if address is not None:
        lines = [line.strip() for line in address.replace("\\n", "\n").splitlines() if line.strip()]
        text = "\n".join(lines)
        if len(text) > ADDRESS_MAX:
            raise InputError(f"customer {customer.code}: address of {len(text)} characters is over the limit of "
                             f"{ADDRESS_MAX}")
        changes["address"] = text or None
    if email is not None:
        email = email.strip()
        if email and (len(email) > 320 or not _EMAIL.match(email)):
            raise InputError(f"customer {customer.code}: billing email {email!r} is not an address like "
                             "accounts@example.com")
        changes["billing_email"] = email or None
    if terms_days is not None:
        if isinstance(terms_days, bool) or not isinstance(terms_days, int) or not 0 <= terms_days <= TERMS_MAX_DAYS:
            raise InputError(f"customer {customer.code}: payment terms {terms_days!r} are not a whole number of days "
                             f"0-{TERMS_MAX_DAYS}")
        changes["payment_terms_days"] = terms_days
    changed = [name for name, value in changes.items() if getattr(customer, name) != value]
    for name, value in changes.items():
        setattr(customer, name, value)
    if changed:
        record_change(session, "customer", customer.code, "changed",
                      "; ".join(f"{name} {getattr(customer, name)!r}" for name in changed))
    return changed
