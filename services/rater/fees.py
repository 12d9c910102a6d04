"""Fixed fees billed: an SDR file's carrier transactions become billing transactions.

Rules, in the order ``bill_fees`` applies them to each carrier transaction (docs/fixed-fees.md,
"Billing fixed fees"):

1. Charge day: the transaction's ``effective_date``, else its ``period_start``, else the day
   its file arrived (operator's zone): a billing run bills the fees charged before its end.
2. The carrier's SDR files are for information only (``Carrier.sdr_for_billing`` false):
   ``information``, with the customer if one is matched (kept and shown, never priced, never
   billed, never in reconciliation).
3. Customer, by the same matcher as calls (``CliDirectory.match``: DDI, account or trunk code,
   longest prefix, range; carrier limits and effective dates on the charge day): the reference
   as a number, with the transaction's account code as an account or trunk code; then the
   reference itself as an account or trunk code. No customer: ``unmatched``, with the reason.
4. Price by the newest fee sheet of the customer's tariff (``feesheet.price_transaction``, the
   tariff's places and rounding). No tariff, no sheet or no row: ``unpriced``, with the reason.
   Otherwise ``priced``: price and the carrier's cost, exact.

A billing transaction is keyed by its carrier transaction: inserting one that exists adds
nothing, so a repeated summary after a crash changes nothing. Unmatched and unpriced ones not on
an invoice are matched again (``rematch_fees``) whenever the reference data changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cdrflow.db.models import BillingTransaction, Carrier, CarrierTransaction, FeeSheetVersion, File
from cdrflow.db.models import Tariff as TariffRow
from cdrflow.db.upsert import insert_new
from cdrflow.errors import InputError, UnknownCarrierError
from cdrflow.filestore import FileStore
from cdrflow.log import get_logger
from cdrflow.numbers import normalise_expr
from cdrflow.reference import record_change
from services.parser.transactions import TRANSACTION_SCHEMA
from services.rater.feesheet import FeeRow, FeeSheet, price_transaction, read_fee_sheet
from services.rater.plan import RatingPlan

log = get_logger(__name__)

PRICED, UNMATCHED, UNPRICED, INFORMATION = "priced", "unmatched", "unpriced", "information"
STATUSES = (PRICED, UNMATCHED, UNPRICED, INFORMATION)
RECON_STATUSES = (UNMATCHED, UNPRICED)
INFORMATION_FILE = "information"
"""The status of an SDR file whose every fee is for information only: it is not ``rated``."""
BILLABLE_FILE_STATUSES = ("parsed", "rated", INFORMATION_FILE)
"""A summary turns a file's rows into fees only in these; a failed, discarded or reversed file's stay as they are."""
DESCRIPTION_CHARS = 200  # BillingTransaction.description


@dataclass(frozen=True)
class BilledFee:
    """What became of one carrier transaction; amounts in pounds, exact."""

    status: str  # priced | unmatched | unpriced | information
    customer: str | None
    price: Decimal | None
    cost: Decimal | None  # the carrier's cost (or the sheet's), what is at stake when not priced
    charge_on: date | None
    reason: str | None = None


# --- the pure part: match and price ------------------------------------------------------

def bill_fees(transactions: Sequence[Mapping[str, Any]], plan: RatingPlan, sheets: Mapping[str, FeeSheet], *,
              carrier: str, for_billing: bool, arrived_on: date | None = None) -> list[BilledFee]:
    """Each transaction (a dict with ``TRANSACTION_SCHEMA``'s fields, amount a Decimal) matched and
    priced by the module's rules, in order."""
    if not transactions:
        return []
    days = [t.get("effective_date") or t.get("period_start") or arrived_on for t in transactions]
    customers = match_customers(transactions, days, plan, carrier)
    billed = []
    for t, day, customer in zip(transactions, days, customers, strict=True):
        amount = t.get("amount")
        if not for_billing:
            billed.append(BilledFee(INFORMATION, customer, None, amount, day,
                                    f"carrier {carrier}'s fixed-fee files are for information only"))
        elif customer is None:
            billed.append(BilledFee(UNMATCHED, None, None, amount, day, _unmatched_reason(t, plan, carrier, day)))
        else:
            billed.append(_priced(t, day, customer, plan, sheets))
    return billed


def match_customers(transactions: Sequence[Mapping[str, Any]], days: Sequence[date | None], plan: RatingPlan,
                    carrier: str) -> list[str | None]:
    """The customer each transaction belongs to (rule 2), by the rating plan's CLI directory."""
    references = pl.Series([t.get("reference") for t in transactions], dtype=pl.String)
    accounts = pl.Series([t.get("account_code") for t in transactions], dtype=pl.String)
    on = pl.Series([datetime(d.year, d.month, d.day) if d else None for d in days], dtype=pl.Datetime("us"))
    number = references.to_frame("r").select(normalise_expr(pl.col("r"), plan.country_code))["r"]
    who = plan.directory.match(number, accounts, on, carrier)
    left = who.is_null()
    if left.any():
        as_code = plan.directory.match(pl.Series([None] * len(who), dtype=pl.String),
                                       references.str.strip_chars(), on, carrier)
        who = pl.DataFrame({"first": who, "then": as_code}).select(pl.coalesce("first", "then")).to_series()
    names = plan.directory.customers
    return [None if i is None else names[i] for i in who.to_list()]


def _unmatched_reason(t: Mapping[str, Any], plan: RatingPlan, carrier: str, day: date | None) -> str:
    reference = (t.get("reference") or "").strip()
    number = pl.select(normalise_expr(pl.lit(reference), plan.country_code)).item()
    what = [f"number {number}" if number.isdigit() else f"code {reference}"] if reference else []
    if t.get("account_code"):
        what.append(f"account code {t['account_code']}")
    on = f" on {day}" if day else ""
    return (f"no customer has {' or '.join(what) or 'a reference'} for carrier {carrier}{on}: "
            "add the CLI or account code to the customer")


def _priced(t: Mapping[str, Any], day: date | None, customer: str, plan: RatingPlan,
            sheets: Mapping[str, FeeSheet]) -> BilledFee:
    amount = t.get("amount")
    code = plan.customers.get(customer)
    if code is None:
        return BilledFee(UNPRICED, customer, None, amount, day, f"customer {customer} has no tariff")
    sheet = sheets.get(code)
    if sheet is None:
        return BilledFee(UNPRICED, customer, None, amount, day,
                         f"tariff {code} has no fee sheet: load one with 'cdrflow fees load {code} FILE'")
    tariff = plan.tariffs.get(code)
    places, rounding = (tariff.places, tariff.rounding) if tariff else (4, "half-up")
    fee = price_transaction(sheet, t, places=places, rounding=rounding)
    if fee.price is None:
        return BilledFee(UNPRICED, customer, None, fee.cost, day, fee.reason)
    return BilledFee(PRICED, customer, fee.price, fee.cost, day)


# --- fee sheets in the database ----------------------------------------------------------

def load_fee_sheet(session: Session, store: FileStore, tariff: str, content: bytes, *, source_name: str) -> FeeSheetVersion:
    """Validate a fee sheet (FeeSheetError lists every problem with its line; nothing changes) and
    make it the tariff's newest version; its CSV goes to the file store."""
    if session.get(TariffRow, tariff) is None:
        raise InputError(f"no tariff {tariff!r}: add it first with 'cdrflow tariffs add'")
    sheet = read_fee_sheet(content, source_name)
    stored = store.put_bytes(content)
    latest = session.scalar(select(func.max(FeeSheetVersion.version)).where(FeeSheetVersion.tariff == tariff)) or 0
    version = FeeSheetVersion(tariff=tariff, version=latest + 1, name=source_name, fingerprint=stored.fingerprint,
                              rows=len(sheet), loaded_at=datetime.now(UTC))
    session.add(version)
    record_change(session, "fee_sheet", tariff, "loaded", f"version {version.version}: {len(sheet)} rows from {source_name}")
    session.flush()
    return version


def fee_sheet_versions(session: Session, tariff: str | None = None) -> list[FeeSheetVersion]:
    stmt = select(FeeSheetVersion).order_by(FeeSheetVersion.tariff, FeeSheetVersion.version)
    if tariff is not None:
        stmt = stmt.where(FeeSheetVersion.tariff == tariff)
    return list(session.scalars(stmt))


def newest_fee_sheets(session: Session, store: FileStore) -> dict[str, FeeSheet]:
    """Each tariff's newest fee sheet, read from the file store by its fingerprint."""
    newest: dict[str, FeeSheetVersion] = {v.tariff: v for v in fee_sheet_versions(session)}
    return {code: read_fee_sheet(store.read_bytes(v.fingerprint), v.name) for code, v in newest.items()}


class FeeSheetCache:
    """The newest fee sheets, read again only when the reference data's version moves."""

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.version: int | None = None
        self.sheets: dict[str, FeeSheet] = {}

    def current(self, session: Session, version: int) -> dict[str, FeeSheet]:
        if version != self.version:
            self.sheets, self.version = newest_fee_sheets(session, self.store), version
        return self.sheets


def fee_sheet_view(v: FeeSheetVersion) -> dict[str, Any]:
    """A FeeSheetVersion as the CLI's --json and the API give it."""
    return {"tariff": v.tariff, "version": v.version, "name": v.name, "rows": v.rows,
            "fingerprint": v.fingerprint, "loaded_at": v.loaded_at.isoformat()}


def fee_row_view(row: FeeRow) -> dict[str, Any]:
    """A fee sheet's row (``feesheet.FeeRow``), amounts as text so they stay exact."""
    return {"line": row.line, "event_type": row.event_type, "reference": row.reference,
            "description": row.description, "rule": row.rule, "price": _text(row.price), "markup": _text(row.markup),
            "cost": _text(row.cost), "per": row.per,
            "effective_from": row.effective_from.isoformat() if row.effective_from else None}


def set_sdr_for_billing(session: Session, carrier_code: str, for_billing: bool) -> Carrier:
    """The carrier rule: its SDR files are billed, or kept for information only. Logged as a
    reference change, so fees not yet invoiced are matched again under the new rule."""
    carrier = session.get(Carrier, carrier_code)
    if carrier is None:
        raise UnknownCarrierError(carrier_code)
    carrier.sdr_for_billing = for_billing
    record_change(session, "carrier", carrier_code, "changed",
                  f"sdr files: {'billing' if for_billing else 'information'}")
    return carrier


# --- billing transactions in the database ------------------------------------------------

def bill_file(session: Session, file: File, plan: RatingPlan, sheets: Mapping[str, FeeSheet], zone: ZoneInfo) -> int:
    """Every carrier transaction of an SDR file becomes its billing transaction (those that exist
    already are left as they are); then the file's status says what became of its rows.
    Returns how many were new."""
    if file.status not in BILLABLE_FILE_STATUSES:
        log.info("fees_not_billed", file_id=file.id, status=file.status)
        return 0
    carrier = session.get(Carrier, file.carrier)
    for_billing = carrier is None or carrier.sdr_for_billing
    known = select(BillingTransaction.carrier_transaction_id).where(BillingTransaction.file_id == file.id)
    transactions = list(session.scalars(
        select(CarrierTransaction).where(CarrierTransaction.file_id == file.id,
                                         CarrierTransaction.id.not_in(known)).order_by(CarrierTransaction.row)))
    billed = bill_fees([_as_mapping(t) for t in transactions], plan, sheets, carrier=file.carrier,
                       for_billing=for_billing, arrived_on=file.received_at.astimezone(zone).date())
    now = datetime.now(UTC)
    rows = [{"carrier_transaction_id": t.id, "file_id": file.id, "customer": b.customer, "status": b.status,
             "reason": b.reason, "description": (t.description or "")[:DESCRIPTION_CHARS] or None,
             "quantity": t.quantity, "price": b.price, "cost": b.cost, "charge_on": b.charge_on, "updated_at": now}
            for t, b in zip(transactions, billed, strict=True)]
    inserted = insert_new(session, BillingTransaction.__table__, rows, ("carrier_transaction_id",))
    settle_file(session, file)
    log.info("fees_billed", file_id=file.id, inserted=inserted, status=file.status, counts=file.status_reason)
    return inserted


def rematch_fees(session: Session, plan: RatingPlan, sheets: Mapping[str, FeeSheet], zone: ZoneInfo) -> int:
    """Match and price again every billing transaction not on an invoice that reconciliation holds
    (unmatched, unpriced), or whose carrier's rule no longer fits it (information on a carrier now
    for billing, or the reverse). Each update is guarded by the status it was read with and by
    ``invoice_id`` still null, so a billing run claiming the fee meanwhile wins. Returns how many
    changed."""
    b, t, c = BillingTransaction, CarrierTransaction, Carrier
    wrong_rule = ((b.status == INFORMATION) & c.sdr_for_billing.is_(True)) \
        | ((b.status != INFORMATION) & c.sdr_for_billing.is_(False))
    found = session.execute(
        select(b, t, c.sdr_for_billing, File).join(t, t.id == b.carrier_transaction_id).join(File, File.id == b.file_id)
        .outerjoin(c, c.code == t.carrier)
        .where(b.invoice_id.is_(None), b.status.in_(RECON_STATUSES) | wrong_rule,
               File.status.in_(BILLABLE_FILE_STATUSES))
        .order_by(b.file_id, t.row)).all()
    changed, files = 0, {}
    by_file: dict[str, list[Any]] = {}
    for row in found:
        by_file.setdefault(row[3].id, []).append(row)
    for rows in by_file.values():
        file, for_billing = rows[0][3], rows[0][2] is not False
        billed = bill_fees([_as_mapping(r[1]) for r in rows], plan, sheets, carrier=file.carrier,
                           for_billing=for_billing, arrived_on=file.received_at.astimezone(zone).date())
        for (held, _, _, _), new in zip(rows, billed, strict=True):
            if (held.status, held.customer, held.price, held.cost, held.reason) == \
                    (new.status, new.customer, new.price, new.cost, new.reason):
                continue
            done = session.execute(update(b).where(b.carrier_transaction_id == held.carrier_transaction_id,
                                                   b.status == held.status, b.invoice_id.is_(None))
                                   .values(status=new.status, customer=new.customer, price=new.price, cost=new.cost,
                                           reason=new.reason, charge_on=new.charge_on,
                                           updated_at=datetime.now(UTC))
                                   .execution_options(synchronize_session=False)).rowcount
            changed += max(done, 0)
            files[file.id] = file
    for file in files.values():
        settle_file(session, file)
    if changed:
        log.info("fees_rematched", fees=changed, files=len(files))
    return changed


def fee_counts(session: Session, file_id: str) -> dict[str, int]:
    counts = dict(session.execute(select(BillingTransaction.status, func.count())
                                  .where(BillingTransaction.file_id == file_id)
                                  .group_by(BillingTransaction.status)).all())
    return {status: counts.get(status, 0) for status in STATUSES}


def settle_file(session: Session, file: File) -> None:
    """The file's status says what became of its rows: ``status_reason`` counts them, and a file
    whose every fee is for information only is ``information``, never ``rated``."""
    counts = fee_counts(session, file.id)
    total = sum(counts.values())
    if total and counts[INFORMATION] == total:
        reason = f"{total} fee(s) for information only (not billed)"
    else:
        reason = f"{counts[PRICED]} fee(s) priced, {counts[UNMATCHED]} unmatched, {counts[UNPRICED]} unpriced"
        if counts[INFORMATION]:
            reason += f", {counts[INFORMATION]} for information only"
    if file.rejected:
        reason += f"; {file.rejected} row(s) rejected"
    file.status_reason, file.updated_at = reason, datetime.now(UTC)
    if file.status in ("parsed", "rated") and total and counts[INFORMATION] == total:
        file.status = INFORMATION_FILE
    elif file.status == INFORMATION_FILE and counts[INFORMATION] != total:
        file.status = "rated"  # its carrier is for billing now: the fees go on like a rated file's calls


def fee_views(session: Session, file_id: str, limit: int | None = None) -> list[dict[str, Any]]:
    """A file's fixed-fee lines as an operator sees them: the carrier's transaction, whose it is, its
    price, or why it is not billed."""
    stmt = select(CarrierTransaction, BillingTransaction).outerjoin(
        BillingTransaction, BillingTransaction.carrier_transaction_id == CarrierTransaction.id) \
        .where(CarrierTransaction.file_id == file_id).order_by(CarrierTransaction.row).limit(limit)
    return [{"row": t.row, "reference": t.reference, "account_code": t.account_code, "description": t.description,
             "event_type": t.event_type, "quantity": t.quantity, "amount": _text(t.amount),
             "status": b.status if b else "pending", "customer": b.customer if b else None,
             "price": _text(b.price) if b else None, "cost": _text(b.cost) if b else None,
             "charge_on": b.charge_on.isoformat() if b and b.charge_on else None,
             "invoice_id": b.invoice_id if b else None, "reason": b.reason if b else None}
            for t, b in session.execute(stmt)]


def _text(amount: Decimal | None) -> str | None:
    """Exact, as few places as it needs but at least two (12.50, -0.375, 15.00)."""
    if amount is None:
        return None
    whole, _, places = f"{amount.normalize():f}".partition(".")
    return f"{whole}.{places.ljust(2, '0')}"


def _as_mapping(t: CarrierTransaction) -> dict[str, Any]:
    return {name: getattr(t, name) for name in TRANSACTION_SCHEMA}
