"""Small builders for rating tests: one call, one plan, numbers written out."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import polars as pl

from cdrflow.callrecords import RECORD_SCHEMA
from cdrflow.money import from_micros, to_micros
from services.rater.clis import parse_cli
from services.rater.engine import rate_calls
from services.rater.plan import DEFAULT_CURRENCY, RETAIL, WHOLESALE, RatingPlan, SheetKey, Tariff
from services.rater.ratesheet import read_rate_sheet

LONDON = ZoneInfo("Europe/London")


def call(start: datetime, duration: int, *, cli="+441632960001", dialled="01174960123", answered=True,
         charge_code=None, cost=None, account_code=None, direction=None) -> dict:
    if start.tzinfo is None:
        start = start.replace(tzinfo=LONDON)
    return {"row": 2, "cli": cli, "dialled": dialled, "start": start, "end": None, "duration": duration,
            "answered": answered, "charge_code": charge_code,
            "cost": None if cost is None else to_micros(Decimal(cost)), "account_code": account_code,
            "direction": direction}


def plan(rates: str, *, tariff: Tariff | None = None, clis=(("ACME", "+441632960001"),), carrier_rates=None,
         wholesale=None, inbound=None, schedules=None, currencies=None) -> RatingPlan:
    """One tariff for every customer of ``clis``; each customer's currency from ``currencies``
    (customer → ISO 4217 code), else the default GBP."""
    tariff = tariff or Tariff("standard")
    sheets = {SheetKey(RETAIL, tariff.code, "outbound"): read_rate_sheet(rates.encode())}
    if carrier_rates:
        sheets[SheetKey(RETAIL, tariff.code, "outbound", "gamma")] = read_rate_sheet(carrier_rates.encode())
    if inbound:
        sheets[SheetKey(RETAIL, tariff.code, "inbound")] = read_rate_sheet(inbound.encode())
    if wholesale:
        sheets[SheetKey(WHOLESALE, "gamma", "outbound")] = read_rate_sheet(wholesale.encode())
    entries = [parse_cli(customer, text) if isinstance(text, str) else parse_cli(customer, **text)
               for customer, text in clis]
    customers = {c: tariff.code for c, _ in clis}
    return RatingPlan(zone=LONDON, tariffs={tariff.code: tariff}, customers=customers,
                      clis=entries, sheets=sheets, schedules=schedules or {},
                      currencies={c: (currencies or {}).get(c, DEFAULT_CURRENCY) for c in customers})


def rate(the_plan: RatingPlan, *calls: dict, carrier="gamma", direction="outbound") -> list[dict]:
    df = pl.DataFrame(list(calls), schema=RECORD_SCHEMA)
    out = rate_calls(df, the_plan, carrier=carrier, direction=direction).to_dicts()
    for r in out:
        for money in ("charge", "cost"):
            r[money] = None if r[money] is None else from_micros(r[money]).normalize()
    return out


def rate_one(the_plan: RatingPlan, one: dict, **kw) -> dict:
    [out] = rate(the_plan, one, **kw)
    return out
