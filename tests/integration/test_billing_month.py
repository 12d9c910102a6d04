"""Acceptance (issue 11): a month of sample data through the real pipeline, and every invoice's
lines, net, VAT and total equal to a recomputation made here from the input files' own text.

Two carriers send calls and a fixed-fee (SDR) file each: gamma in its own formats (``gamma``
CDR, ``gamma-rental`` SDR), for billing; btw in ours (``generic-cdr``, ``generic-sdr``), whose
SDR files are for information only and must never be billed. Three customers bill weekly,
monthly and quarterly (``quarterly:2``: Aug–Oct ends with October); the quarterly one is
zero-rated. Recurring charges start mid-period (pro rata), a one-off charge is billed once,
a cease credits unused days. The operator uploads the files and closes the runs through the
admin API, then credits the monthly customer's October invoice and bills November, which
takes again what the credit freed.

The expected figures never come from the database: this module parses its own CSV rows and
applies the documented rules (docs/rating.md, docs/fixed-fees.md, docs/billing-schedules.md,
docs/billing.md) with Decimal. Every service is its own process on the real broker and
PostgreSQL (tests/integration/conftest.py)."""

from __future__ import annotations

import csv
import fnmatch
import io
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson

from cdrflow.bus import Topic, topic_name
from cdrflow.client import AdminClient
from tests.integration.conftest import read_topic, wait_until
from tests.authhelp import admin_headers

LONDON = ZoneInfo("Europe/London")
"""The operator's zone (CDRFLOW_TIMEZONE's default): bands, local days and period ends."""
PENNY, TARIFF_PLACES = Decimal("0.01"), Decimal("0.0001")
VAT = {"standard": Decimal("0.20"), "zero": Decimal(0)}

# --- reference data, as an operator would load it -------------------------------------------

TARIFF = "month"
RATE_SHEET = """\
code,destination,peak,offpeak,weekend,setup,minimum,increments
44,UK geographic,0.0125,0.0085,0.0040,0,0.0100,60/1
447,UK mobile,0.0450,0.0350,0.0250,0.0050,0,1/1
44800,UK freephone,0,0,0,0,0,1/1
33,France,0.0725,0.0610,0.0550,0.0150,0,30/6
353,Ireland,0.0612,0.0512,0.0412,0.0100,0.0200,60/60
"""
FEE_SHEET = """\
event_type,reference,description,rule,price,markup,cost,per,effective_from
Rental,,Business Line Rental*,fixed,15.00,,,month,
Cease,,Business Line Rental*,fixed,15.00,,,month,
Connection,,,fixed,50.00,,,once,
Rental,,Call Barring,markup,,20,,,
,,Voicemail*,passthrough,,,,,
*,*,*,markup,,33.333333,,,
"""


@dataclass(frozen=True)
class CustomerSpec:
    code: str
    schedule: str
    tax_code: str
    clis: tuple[str, ...]  # as the API takes them: DDIs, or a range FROM-TO


WEEKLY = CustomerSpec("WEEKLYCO", "weekly", "standard", ("+441632961001",))
MONTHLY = CustomerSpec("MONTHLYCO", "monthly", "standard", ("+441632961101", "+441632961102"))
QUARTERLY = CustomerSpec("QUARTERCO", "quarterly:2", "zero", ("+441632961200-+441632961299",))
CUSTOMERS = (WEEKLY, MONTHLY, QUARTERLY)

CHARGES = {  # defined in cdrflow, per customer (docs/billing-schedules.md)
    WEEKLY.code: [dict(description="Hosted PBX licence", amount="12.00", quantity=1, frequency="monthly",
                       start="2026-10-14")],
    MONTHLY.code: [dict(description="Hosted PBX seats", amount="8.50", quantity=3, frequency="monthly",
                        start="2026-10-14"),
                   dict(description="Handset", amount="64.99", quantity=2, frequency="once", start="2026-10-20")],
    QUARTERLY.code: [dict(description="Support", amount="45.00", quantity=1, frequency="quarterly",
                          start="2026-09-10")],
}

# --- the month's files ---------------------------------------------------------------------

GAMMA_CDR_HEADER = [
    "Call Type", "Call Cause Definition Required", "Customer Identifier", "Non-Charged Party", "Call Date",
    "Call Time", "Duration", "Bytes Transmitted", "Bytes Received", "Description", "Chargecode", "Time Band",
    "Salesprice", "Salesprice (pre-bundle)", "Extension", "DDI", "Grouping ID", "Call Class (Feature)", "Carrier",
    "Recording", "VAT", "Country of Origin", "Network", "Retail tariff code", "Remote Network", "APN",
    "Diverted Number", "Ring time", "Record ID", "Currency", "Caller Line Identity", "Network Access Reference",
    "NGCS Access Charge", "NGCS Service Charge", "Total Bytes Transferred", "User ID", "Onward Billing Reference",
    "Contract Name", "Bundle Name", "Bundle Allowance", "Discount Reference", "Routing Code"]
GAMMA_CALLS = [  # CLI, dialled, date, time (UK local), duration s, charge code, carrier's price
    ("01632961001", "01174960123", "01/10/2026", "09:15:00", 125, "BRS", "0.0030"),      # weekly, Thu peak
    ("01632961001", "07700900123", "03/10/2026", "11:00:00", 61, "MOB", "0.0080"),       # Sat
    ("01632961001", "0033142685300", "09/10/2026", "17:59:30", 47, "FRA", "0.0090"),     # Fri, peak to 18:00
    ("01632961001", "02079460000", "13/10/2026", "19:30:00", 3600, "LON", "0.1200"),     # W42 off-peak
    ("01632961001", "07700900456", "21/10/2026", "08:00:00", 1, "MOB", "0.0001"),        # W43 peak
    ("01632961001", "00353112345678", "27/10/2026", "07:59:59", 61, "IRL", "0.0200"),    # W44 off-peak, GMT now
    ("01632961001", "01174960123", "03/11/2026", "10:00:00", 30, "BRS", "0.0010"),       # W45: no run bills it
    ("01632961101", "01174960555", "02/10/2026", "10:02:30", 60, "BRS", "0.0011"),       # monthly
    ("01632961102", "07700900789", "12/10/2026", "12:00:00", 299, "MOB", "0.0300"),
    ("01632961101", "0033142685301", "16/10/2026", "18:00:00", 30, "FRA", "0.0050"),     # off-peak from 18:00
    ("01632961102", "01632960999", "24/10/2026", "23:59:00", 300, "BRS", "0.0020"),      # Sat
    ("01632961101", "08001234567", "26/10/2026", "08:00:00", 600, "FRE", "0.0000"),      # freephone: 0
    ("01632961101", "01174960123", "01/11/2026", "00:05:00", 90, "BRS", "0.0010"),       # November
    ("01632961201", "07700900111", "05/10/2026", "14:14:14", 754, "MOB", "0.0500"),      # quarterly
    ("01632961202", "0035318889999", "30/10/2026", "16:45:00", 125, "IRL", "0.0400"),
    ("01632961201", "01174960123", "02/11/2026", "09:00:00", 40, "BRS", "0.0010"),       # after its quarter
]
BTW_CDR = """\
cli,dialled,start,duration
+441632961001,01174960999,2026-10-06T12:00:00+01:00,240
01632961001,07700900222,2026-10-25T01:30:00,95
+441632961001,01174960999,2026-11-01T23:30:00Z,30
+441632961101,02079460001,2026-10-31T23:30:00+00:00,3601
+441632961102,07700900333,2026-11-01T00:10:00+01:00,59
01632961101,0033612345678,2026-10-07T08:30:00,185
+441632961201,01174960321,2026-09-15T10:00:00+01:00,600
+441632961202,07700900444,2026-08-03T18:30:00,45
01632961201,02079460002,2026-10-31T12:00:00,1200
"""
"""generic-cdr: times with an offset, in UTC (Z), and local (London; 01:30 on 25 October, in the
hour the clocks go back, is read as the first, summer, one). 00:10 on 1 November at +01:00 is
23:10 GMT on 31 October: October's, in London."""
GAMMA_RENTAL = """\
"Effective Date","Month/Year","CLI","Billing Description","Event Type","Total Cost","Broken Part Cost","Quantity"
"01/10/2026","10/2026","01632961101","Business Line Rental","Rental","12.50","0.00","1"
"15/10/2026","10/2026","01632961102","Business Line Rental, ISDN2","Connection","35.00","6.7742","1"
"15/10/2026","10/2026","01632961102","Business Line Rental","Rental","12.50","6.8548","1"
"01/10/2026","10/2026","01632961001","Call Barring","Rental","0.75","","2"
"20/10/2026","10/2026","01632961001","Business Line Rental","Cease","-12.50","-4.8387","1"
"01/10/2026","10/2026","01632961201","Voicemail Pro","Rental","3.345","0.00","1"
"01/10/2026","10/2026","01632961202","Hosted Seat","Rental","7.35","0.00","3"
"""
BTW_SDR = """\
reference,description,event_type,period_start,period_end,quantity,amount,pro_rata
+441632961101,BT line rental (information only),Rental,2026-10-01,2026-11-01,1,11.00,no
+441632961201,BT broadband (information only),Rental,2026-10-01,2026-11-01,1,24.00,no
+441632961001,BT installation (information only),Connection,2026-10-05,2026-10-06,1,99.00,no
"""


def gamma_cdr_text() -> str:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(GAMMA_CDR_HEADER)
    for n, (cli, dialled, day, clock, duration, code, price) in enumerate(GAMMA_CALLS, 1):
        row = dict.fromkeys(GAMMA_CDR_HEADER, "") | {
            "Call Type": "V", "Customer Identifier": cli, "Non-Charged Party": dialled, "Call Date": day,
            "Call Time": clock, "Duration": str(duration), "Chargecode": code, "Salesprice": price,
            "Salesprice (pre-bundle)": price, "Carrier": "GAMMA", "VAT": "S", "Record ID": str(910000000 + n),
            "Currency": "GBP", "Caller Line Identity": cli}
        writer.writerow([row[h] for h in GAMMA_CDR_HEADER])
    return out.getvalue()


# --- the recomputation: rating (docs/rating.md) --------------------------------------------


@dataclass(frozen=True)
class Rate:
    destination: str
    per_minute: dict[str, Decimal]
    setup: Decimal
    minimum: Decimal
    initial: int
    subsequent: int


def read_rates(text: str) -> dict[str, Rate]:
    rates = {}
    for row in csv.DictReader(io.StringIO(text)):
        initial, subsequent = (int(x) for x in row["increments"].split("/"))
        rates[row["code"]] = Rate(row["destination"], {b: Decimal(row[b]) for b in ("peak", "offpeak", "weekend")},
                                  Decimal(row["setup"]), Decimal(row["minimum"]), initial, subsequent)
    return rates


def e164(number: str) -> str:
    """Rule 1: + stripped, 00 international, national 0 → 44."""
    number = number.strip()
    if number.startswith("+"):
        return number[1:]
    if number.startswith("00"):
        return number[2:]
    if number.startswith("0"):
        return "44" + number[1:]
    return number


def band(start: datetime) -> str:
    """Rule 4, uk-default: peak Mon–Fri 08:00–18:00 local, off-peak the rest of Mon–Fri, weekend Sat–Sun."""
    local = start.astimezone(LONDON)
    if local.weekday() >= 5:
        return "weekend"
    return "peak" if time(8) <= local.time() < time(18) else "offpeak"


def billable_seconds(duration: int, rate: Rate) -> int:
    """Rule 5: d ≤ I bills I, else I + ⌈(d − I)/S⌉·S."""
    if duration <= rate.initial:
        return rate.initial
    return rate.initial + math.ceil((duration - rate.initial) / rate.subsequent) * rate.subsequent


def call_charge(rates: dict[str, Rate], dialled: str, start: datetime, duration: int) -> Decimal:
    """Rules 3 and 6: longest dial prefix; max(minimum, setup + rate × billable/60), rounded once
    per call, half up, to the tariff's 4 places."""
    number = e164(dialled)
    code = max((c for c in rates if number.startswith(c)), key=len)
    rate = rates[code]
    exact = rate.setup + rate.per_minute[band(start)] * billable_seconds(duration, rate) / 60
    return max(rate.minimum, exact).quantize(TARIFF_PLACES, ROUND_HALF_UP)


@dataclass
class CallIn:
    customer: str
    start: datetime  # aware
    charge: Decimal
    invoice: str | None = None  # the expected invoice's key, once billed


def owner_of(cli: str) -> str:
    """Which of our customers a CLI (or an SDR's reference) is, by our own CLI list."""
    number = e164(cli)
    for spec in CUSTOMERS:
        for entry in spec.clis:
            if "-" in entry:
                low, high = (int(e164(x)) for x in entry.split("-"))
                if low <= int(number) <= high:
                    return spec.code
            elif e164(entry) == number:
                return spec.code
    raise AssertionError(f"no customer of this test has CLI {cli}")


def calls_of_files(rates: dict[str, Rate], gamma_text: str, btw_text: str) -> list[CallIn]:
    calls = []
    for row in csv.DictReader(io.StringIO(gamma_text)):  # gamma: UK local times
        local = datetime.strptime(f"{row['Call Date']} {row['Call Time']}", "%d/%m/%Y %H:%M:%S")
        start = local.replace(tzinfo=LONDON)  # fold=0: the first (summer) reading of a repeated hour
        calls.append(CallIn(owner_of(row["Customer Identifier"]), start,
                            call_charge(rates, row["Non-Charged Party"], start, int(row["Duration"]))))
    for row in csv.DictReader(io.StringIO(btw_text)):  # generic-cdr: ISO 8601, local when no offset
        start = datetime.fromisoformat(row["start"].replace("Z", "+00:00"))
        if start.tzinfo is None:
            start = start.replace(tzinfo=LONDON)
        calls.append(CallIn(owner_of(row["cli"]), start, call_charge(rates, row["dialled"], start,
                                                                      int(row["duration"]))))
    return calls


# --- the recomputation: fixed fees (docs/fixed-fees.md) ------------------------------------


@dataclass
class FeeIn:
    customer: str
    charge_on: date
    description: str
    quantity: int
    pennies: int
    invoice: str | None = None


def _rank(row: dict[str, str], event_type: str, reference: str, description: str) -> tuple[int, int, int] | None:
    """None if the sheet row does not match; else how specific it is (rule 2)."""
    given = {k: row[k].strip() for k in ("event_type", "reference", "description") if row[k].strip() not in ("", "*")}
    if "event_type" in given and given["event_type"].casefold() != event_type.casefold():
        return None
    if "reference" in given and given["reference"].casefold() != reference.casefold():
        return None
    if "description" in given and not fnmatch.fnmatchcase(description.casefold(), given["description"].casefold()):
        return None
    top = 3 if "reference" in given else 2 if "description" in given else 1 if "event_type" in given else 0
    return top, len(given), len(given.get("description", "").replace("*", ""))


def month_fraction(first: date, until: date) -> Decimal:
    """Rule 4: for each calendar month touched, days covered over the month's days (exact enough:
    Decimal's 28 digits, rounded once afterwards to 4 places)."""
    total, day = Decimal(0), first
    while day < until:
        month_end = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
        month_days = (month_end - day.replace(day=1)).days
        part_end = min(month_end, until)
        total += Decimal((part_end - day).days) / month_days
        day = part_end
    return total


def fees_of_file(sheet_text: str, gamma_rental_text: str) -> list[FeeIn]:
    sheet = list(csv.DictReader(io.StringIO(sheet_text)))
    fees = []
    for row in csv.DictReader(io.StringIO(gamma_rental_text)):
        effective = datetime.strptime(row["Effective Date"], "%d/%m/%Y").date()
        period_start = datetime.strptime(row["Month/Year"], "%m/%Y").date()
        period_end = (period_start + timedelta(days=32)).replace(day=1)
        amount, quantity = Decimal(row["Total Cost"]), int(row["Quantity"])
        pro_rata = Decimal(row["Broken Part Cost"] or 0) != 0
        ranked = [(r, rank) for r in sheet if (rank := _rank(r, row["Event Type"], row["CLI"],
                                                              row["Billing Description"])) is not None]
        best = max(ranked, key=lambda x: x[1])
        assert [x[1] for x in ranked].count(best[1]) == 1, f"ambiguous sheet rows for {row}"
        rule = best[0]
        sign = -1 if amount < 0 else 1
        if rule["rule"] == "fixed":
            fraction = Decimal(1)
            if pro_rata and (rule["per"] or "month") == "month":
                fraction = month_fraction(max(period_start, effective), period_end)
            price = sign * Decimal(rule["price"]) * abs(quantity) * fraction
        elif rule["rule"] == "markup":
            price = amount * (1 + Decimal(rule["markup"]) / 100)
        else:
            price = amount
        price = price.quantize(TARIFF_PLACES, ROUND_HALF_UP)  # rule 7: once, to the tariff's places
        fees.append(FeeIn(owner_of(row["CLI"]), effective, row["Billing Description"], quantity,
                          pennies(price)))  # docs/billing.md: the price rounded once, half up, to the penny
    return fees


# --- the recomputation: schedules, recurring and one-off charges (docs/billing-schedules.md) --


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # exclusive


def _months_later(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, day.day)


def period_containing(schedule: str, day: date) -> Period:
    """Only what this test's customers use: weekly (Mon–Sun), monthly (calendar), quarterly:M."""
    if schedule == "weekly":
        start = day - timedelta(days=day.weekday())
        return Period(start, start + timedelta(days=7))
    if schedule == "monthly":
        start = day.replace(day=1)
        return Period(start, _months_later(start, 1))
    first_month = int(schedule.split(":")[1]) if ":" in schedule else 1
    month, year = day.month - (day.month - first_month) % 3, day.year
    if month < 1:
        month, year = month + 12, year - 1
    start = date(year, month, 1)
    return Period(start, _months_later(start, 3))


def charge_period_containing(frequency: str, schedule: str, day: date) -> Period:
    """Rule 1: charge periods laid on the customer's schedule (from the 1st for weekly and these
    schedules; quarters from the schedule's first month)."""
    if frequency == "monthly":
        return period_containing("monthly", day)
    return period_containing(schedule if schedule.startswith("quarterly") else "quarterly", day)


@dataclass
class ChargeIn:
    customer: str
    description: str
    amount: Decimal
    quantity: int
    frequency: str
    start: date
    billed_until: date | None = None
    billed_by: dict[str, date | None] = field(default_factory=dict)  # invoice key → billed_until before it


def charge_lines(charge: ChargeIn, schedule: str, period: Period) -> list[tuple[str, int, int, str]]:
    """Rules 3–5: (description, quantity, pennies, kind) due at the run closing ``period``, and
    ``billed_until`` moved on."""
    if charge.frequency == "once":
        if charge.billed_until is not None or charge.start >= period.end:
            return []
        charge.billed_until = charge.start + timedelta(days=1)
        return [(f"{charge.description} {charge.start.isoformat()}", charge.quantity,
                 pennies(charge.amount * charge.quantity), "one-off")]
    following = period_containing(schedule, period.end)
    horizon = charge_period_containing(charge.frequency, schedule, following.end - timedelta(days=1)).end
    first = charge.billed_until or charge.start
    lines = []
    while first < horizon:
        grid = charge_period_containing(charge.frequency, schedule, first)
        until = min(grid.end, horizon)
        days, grid_days = (until - first).days, (grid.end - grid.start).days
        whole = charge.amount * charge.quantity
        text = f"{charge.description} {first.isoformat()}..{(until - timedelta(days=1)).isoformat()}"
        if days == grid_days:
            lines.append((text, charge.quantity, pennies(whole), "recurring"))
        else:
            lines.append((f"{text} ({days} of {grid_days} days)", charge.quantity,
                          pennies(whole * days / grid_days), "recurring"))
        first = until
    if lines:
        charge.billed_until = horizon
    return lines


def pennies(pounds: Decimal) -> int:
    """Rounded once, half up (away from zero), to the penny."""
    return int((pounds * 100).quantize(Decimal(1), ROUND_HALF_UP))


# --- the recomputation: invoices (docs/billing.md) -----------------------------------------


@dataclass
class Expected:
    lines: list[tuple[str, int, str, str, str]]  # description, quantity, amount, tax code, kind
    net: str
    tax: str
    total: str


class Month:
    """What every run must bill, worked out from the input files and the charges alone."""

    def __init__(self) -> None:
        self.calls = calls_of_files(read_rates(RATE_SHEET), gamma_cdr_text(), BTW_CDR)
        self.fees = fees_of_file(FEE_SHEET, GAMMA_RENTAL)
        self.charges = [ChargeIn(code, c["description"], Decimal(c["amount"]), c["quantity"], c["frequency"],
                                 date.fromisoformat(c["start"])) for code, cs in CHARGES.items() for c in cs]
        self.specs = {s.code: s for s in CUSTOMERS}

    def close(self, customer: str, period: Period) -> Expected | None:
        spec, key = self.specs[customer], f"{customer} {period.start}"
        end_utc = datetime.combine(period.end, time(), LONDON).astimezone(UTC)
        lines: list[tuple[str, int, int, str]] = []
        calls = [c for c in self.calls if c.customer == customer and c.invoice is None and c.start < end_utc]
        if calls:
            for c in calls:
                c.invoice = key
            exact = sum((c.charge for c in calls), Decimal(0))  # exact sum, rounded once
            lines.append(("Call Charges", len(calls), pennies(exact), "calls"))
        for fee in self.fees:
            if fee.customer == customer and fee.invoice is None and fee.charge_on < period.end:
                fee.invoice = key
                lines.append((fee.description, fee.quantity, fee.pennies, "fee"))
        for charge in self.charges:
            if charge.customer == customer:
                before = charge.billed_until
                due = charge_lines(charge, spec.schedule, period)
                if due:
                    charge.billed_by[key] = before
                lines += due
        if not lines:
            return None
        net = sum(p for _, _, p, _ in lines)
        tax = pennies(Decimal(net) / 100 * VAT[spec.tax_code])  # one code per customer: VAT on its net, once
        return Expected(sorted((d, q, money(p), spec.tax_code, k) for d, q, p, k in lines),
                        money(net), money(tax), money(net + tax))

    def credit(self, customer: str, period: Period) -> None:
        """docs/billing.md, a credit note: its calls and fees are unbilled again, each charge gets
        back the billed_until it had before that run (a one-off: not billed)."""
        key = f"{customer} {period.start}"
        for item in [*self.calls, *self.fees]:
            if item.invoice == key:
                item.invoice = None
        for charge in self.charges:
            if key in charge.billed_by:
                charge.billed_until = charge.billed_by.pop(key)


def money(minor: int) -> str:
    return f"{Decimal(minor).scaleb(-2):f}"


# --- the operator's side: the admin API ----------------------------------------------------


def api(http: httpx.Client, method: str, path: str, **kw: Any) -> Any:
    """The admin API's JSON reply; the test fails with the API's own words on an error."""
    reply = http.request(method, path, **kw)
    assert reply.status_code in (200, 201, 202), f"{method} {path}: HTTP {reply.status_code} {reply.text}"
    return reply.json() if reply.content else None


def set_up_reference(http: httpx.Client) -> None:
    api(http, "PUT", f"/tariffs/{TARIFF}", json={"name": "Month test tariff", "schedule": "uk-default",
                                                 "places": 4, "rounding": "half-up"})
    api(http, "POST", "/rate-sheets", params={"kind": "retail", "owner": TARIFF, "name": "month-rates.csv"},
        content=RATE_SHEET.encode())
    api(http, "POST", "/fee-sheets", params={"tariff": TARIFF, "name": "month-fees.csv"}, content=FEE_SHEET.encode())
    for carrier, kind, fmt in (("gamma", "cdr", "gamma"), ("gamma", "sdr", "gamma-rental"),
                               ("btw", "cdr", "generic-cdr"), ("btw", "sdr", "generic-sdr")):
        api(http, "PUT", f"/carriers/{carrier}/formats/{kind}", json={"format": fmt})
    assert api(http, "PUT", "/carriers/btw/rules", json={"sdr": "information"})["sdr"] == "information"
    for spec in CUSTOMERS:
        api(http, "PUT", f"/customers/{spec.code}", json={
            "name": f"{spec.code.title()} Ltd", "tariff": TARIFF, "billing_schedule": spec.schedule,
            "tax_code": spec.tax_code, "billing_email": f"accounts@{spec.code.lower()}.example",
            "address": "1 High Street\nBristol BS1 1AA", "payment_terms_days": 30})
        for cli in spec.clis:
            api(http, "POST", f"/customers/{spec.code}/clis", json={"cli": cli})
        for charge in CHARGES[spec.code]:
            api(http, "POST", f"/customers/{spec.code}/charges", json=charge)


def upload(client: AdminClient, tmp_path: Path, name: str, text: str, carrier: str, kind: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return client.upload(path, carrier=carrier, kind=kind, period="monthly", direction="outbound")["file_id"]


def file_status(client: AdminClient, file_id: str) -> str | None:
    return next((f["status"] for f in client.files() if f["file_id"] == file_id), None)


def invoice_of(client: AdminClient, customer: str, period: Period) -> dict | None:
    return next((i for i in client.invoices(customer) if i["period_start"] == period.start.isoformat()), None)


def as_issued(invoice: dict) -> Expected:
    return Expected(sorted((ln["description"], ln["quantity"], ln["amount"], ln["tax_code"], ln["kind"])
                           for ln in invoice["lines"]), invoice["net"], invoice["tax"], invoice["total"])


# --- the test --------------------------------------------------------------------------------

W41, W43, W44 = (Period(date(2026, 10, d), date(2026, 10, d) + timedelta(days=7)) for d in (5, 19, 26))
OCTOBER, NOVEMBER = Period(date(2026, 10, 1), date(2026, 11, 1)), Period(date(2026, 11, 1), date(2026, 12, 1))
AUG_OCT = Period(date(2026, 8, 1), date(2026, 11, 1))
RUNS = [  # in the order the operator closes them: (customer, period, as the API is given it)
    (WEEKLY.code, W41, "2026-W41"), (WEEKLY.code, W43, "2026-W43"), (WEEKLY.code, W44, "2026-W44"),
    (MONTHLY.code, OCTOBER, "2026-10"), (QUARTERLY.code, AUG_OCT, "2026-08-01"),
]


def test_a_month_of_files_bills_every_invoice_as_recomputed_from_the_files(settings, running, tmp_path):
    client = AdminClient.for_settings(settings)
    http = httpx.Client(base_url=settings.admin_url, timeout=30, headers=admin_headers(settings))
    set_up_reference(http)

    files = {
        "gamma-cdr": upload(client, tmp_path, "gamma-cdr-202610.csv", gamma_cdr_text(), "gamma", "cdr"),
        "btw-cdr": upload(client, tmp_path, "btw-cdr-202610.csv", BTW_CDR, "btw", "cdr"),
        "gamma-sdr": upload(client, tmp_path, "gamma-rental-202610.csv", GAMMA_RENTAL, "gamma", "sdr"),
        "btw-sdr": upload(client, tmp_path, "btw-sdr-202610.csv", BTW_SDR, "btw", "sdr"),
    }
    final = {"rated", "information", "failed", "held", "discarded"}
    for name, file_id in files.items():
        wait_until(f"{name} processed", lambda f=file_id: file_status(client, f) in final, timeout=60)
    shown = {name: client.file(file_id) for name, file_id in files.items()}
    assert {n: f["status"] for n, f in shown.items()} == {
        "gamma-cdr": "rated", "btw-cdr": "rated", "gamma-sdr": "rated", "btw-sdr": "information"}, \
        {n: f["status_reason"] for n, f in shown.items()}
    assert {f["status"] for f in shown["gamma-sdr"]["fees"]} == {"priced"}
    assert client.recon() == [], "every call and fee of the month matched and priced"

    month = Month()
    expected: dict[tuple[str, date], Expected | None] = {}
    for customer, period, label in RUNS:
        client.close_run(customer, label)
        expected[customer, period.start] = month.close(customer, period)
        assert expected[customer, period.start] is not None
        issued = wait_until(f"{customer} {label} invoiced", lambda c=customer, p=period: invoice_of(client, c, p),
                            timeout=30)
        assert as_issued(issued) == expected[customer, period.start], f"{customer} {label} ({issued['invoice_number']})"

    # A credit note voids the monthly customer's October invoice in full; closing October again
    # makes nothing new; November's run bills what the credit freed, with November's own.
    october = invoice_of(client, MONTHLY.code, OCTOBER)
    assert october is not None
    api(http, "POST", f"/invoices/{october['invoice_number']}/credit", json={"reason": "wrong seats count"})
    credited = wait_until("credit note", lambda: (lambda i: i if i["status"] == "credited" else None)(
        api(http, "GET", f"/invoices/{october['invoice_number']}")), timeout=30)
    note = credited["credit_note"]
    assert note["credit_note_number"].startswith("CN-")
    assert (note["net"], note["tax"], note["total"]) == tuple(f"-{october[k]}" for k in ("net", "tax", "total"))
    month.credit(MONTHLY.code, OCTOBER)
    again = client.close_run(MONTHLY.code, "2026-10")
    assert again["already"] is True and again["invoice_number"] == october["invoice_number"]

    client.close_run(MONTHLY.code, "2026-11")
    expected[MONTHLY.code, NOVEMBER.start] = month.close(MONTHLY.code, NOVEMBER)
    rebilled = wait_until("November invoice", lambda: invoice_of(client, MONTHLY.code, NOVEMBER), timeout=30)
    assert as_issued(rebilled) == expected[MONTHLY.code, NOVEMBER.start]

    invoices = client.invoices()
    assert len(invoices) == len(RUNS) + 1
    numbers = sorted(i["invoice_number"] for i in invoices)
    assert numbers == [f"INV-{n:06d}" for n in range(1, len(invoices) + 1)], "gap-free numbers"

    # Finance systems get the same figures: one invoice-issued event per invoice.
    events = [orjson.loads(v)["data"] for v in read_topic(
        settings.bootstrap, topic_name(settings.namespace, Topic.INVOICE_ISSUED), len(invoices))]
    assert {(e["customer"], e["period_start"]): as_issued(e) for e in events} == \
        {(c, start.isoformat()): e for (c, start), e in expected.items()}

    # Nothing of the information-only carrier is billed; the calls after the runs' periods wait.
    billed = [ln["description"] for i in invoices for ln in i["lines"]]
    assert not [d for d in billed if "information only" in d]
    info = client.file(files["btw-sdr"])["fees"]
    assert [(f["status"], f["customer"], f["invoice_id"]) for f in info] == [
        ("information", MONTHLY.code, None), ("information", QUARTERLY.code, None), ("information", WEEKLY.code, None)]
    for customer, count in ((WEEKLY.code, 1), (QUARTERLY.code, 1), (MONTHLY.code, 0)):
        unbilled = api(http, "GET", f"/customers/{customer}/calls", params={"unbilled": "true"})
        assert unbilled["unbilled"]["calls"] == count, customer
