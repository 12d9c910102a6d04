"""Tables. One concept, one name: file, call, charge, billing run, invoice, carrier, customer, CLI.

Unique keys carry the exactly-once guarantee: a file by its id, a call by
(file_id, row), an invoice by (customer, period_start, period_end), an
outbox entry by its event id. Every write that may be repeated after a crash
hits one of them and becomes a no-op.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    JSON,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from cdrflow.db.types import Money, UtcDateTime
from cdrflow.reasons import shorten


class Base(DeclarativeBase):
    pass


class Carrier(Base):
    __tablename__ = "carriers"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    file_format: Mapped[str] = mapped_column(String(64), default="generic-cdr")
    file_name_pattern: Mapped[str | None] = mapped_column(String(200))
    """Regular expression (searched, case-insensitive) that this carrier's file names match: how a file
    mailed to cdrs@ finds its carrier."""
    mail_senders: Mapped[str | None] = mapped_column(Text)
    """Who may mail this carrier's files: addresses or ``@domain``s separated by spaces; empty: anyone."""
    hold_same_name: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Processing rule: hold a file that reuses an earlier file name of this carrier, even with new content."""
    sdr_for_billing: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    """Processing rule: this carrier's fixed-fee (SDR) files are billed (default) or kept for information only."""


class Tariff(Base):
    """How a customer's calls are priced: its rate sheets, schedule and rounding."""

    __tablename__ = "tariffs"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    schedule: Mapped[str] = mapped_column(String(64), default="uk-default")
    split_bands: Mapped[bool] = mapped_column(Boolean, default=False)
    places: Mapped[int] = mapped_column(Integer, default=4)
    rounding: Mapped[str] = mapped_column(String(16), default="half-up")
    charge_unanswered: Mapped[bool] = mapped_column(Boolean, default=False)


class PeakSchedule(Base):
    """A named peak time schedule: rules ``band,days,start,end`` as CSV text."""

    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    rules: Mapped[str] = mapped_column(Text)
    holidays_as_weekend: Mapped[bool] = mapped_column(Boolean, default=False)
    holiday_region: Mapped[str] = mapped_column(String(16), default="GB-ENG")


class RateSheetVersion(Base):
    """One loaded version of a rate sheet; its CSV lives in the file store under ``fingerprint``.

    Retail sheets belong to a tariff (``owner``) and a direction, optionally overriding it for
    one ``carrier``; wholesale sheets belong to a carrier (``owner``). The newest version is active."""

    __tablename__ = "rate_sheets"
    __table_args__ = (UniqueConstraint("kind", "owner", "direction", "carrier", "version", name="uq_rate_sheet_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # retail | wholesale
    owner: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8))
    carrier: Mapped[str] = mapped_column(String(64), default="")
    version: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64))
    source_name: Mapped[str] = mapped_column(String(500))
    rows: Mapped[int] = mapped_column(Integer)
    loaded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Customer(Base):
    __tablename__ = "customers"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    tariff: Mapped[str | None] = mapped_column(ForeignKey("tariffs.code"))
    billing_schedule: Mapped[str] = mapped_column(String(16), default="monthly")
    """``services.invoicer.periods.BillingSchedule`` text: ``monthly``, ``monthly:15``, ``weekly:mon``, ``quarterly:2``."""
    billing_email: Mapped[str | None] = mapped_column(String(320))
    address: Mapped[str | None] = mapped_column(Text)
    """Postal address as the invoice shows it, one line per line."""
    tax_code: Mapped[str] = mapped_column(String(16), default="standard", server_default="standard")
    """``services.invoicer.tax``: standard (UK VAT 20%), zero or exempt."""
    currency: Mapped[str] = mapped_column(String(3), default="GBP", server_default="GBP")
    payment_terms_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    billing_starts: Mapped[date | None] = mapped_column(Date)
    """The first day the scheduler bills the customer for (none: from the period it is first seen in)."""

    clis: Mapped[list[CustomerCli]] = relationship(back_populates="customer", cascade="all, delete-orphan")


class CustomerCli(Base):
    """A CLI that identifies the customer on carriers' CDRs: a DDI, a DDI prefix or from–to
    range (E.164 digits, no '+'), an account code or a SIP trunk code."""

    __tablename__ = "customer_clis"
    __table_args__ = (UniqueConstraint("kind", "value", "carrier", "effective_from", name="uq_customer_cli"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_code: Mapped[str] = mapped_column(ForeignKey("customers.code"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # ddi | prefix | range | account | trunk
    value: Mapped[str] = mapped_column(String(64))
    carrier: Mapped[str | None] = mapped_column(String(64))
    effective_from: Mapped[date | None] = mapped_column(Date)
    effective_to: Mapped[date | None] = mapped_column(Date)  # exclusive

    customer: Mapped[Customer] = relationship(back_populates="clis")


class ReferenceChange(Base):
    """Every change to reference data, in order: the audit trail, and the version the rater
    compares to know when to reload its plan and re-rate calls in reconciliation."""

    __tablename__ = "reference_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity: Mapped[str] = mapped_column(String(32))  # tariff | schedule | rate_sheet | customer | cli | carrier
    key: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(16))  # added | changed | removed | loaded
    detail: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class File(Base):
    """A file as received: its bytes live in the file store under ``fingerprint``."""

    __tablename__ = "files"

    __table_args__ = (Index("ix_files_carrier_name", "carrier", "original_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    """SHA-256 of the bytes as received: the file's address in the file store."""
    content_fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    """SHA-256 of the decompressed content: what duplicates are found by (a file plain or zipped is one)."""
    hold_reason: Mapped[str | None] = mapped_column(String(16))
    """Why a held file is held: ``duplicate`` (same content) or ``same name``."""
    overlap_policy: Mapped[str] = mapped_column(String(8), default="skip", server_default="skip")
    """What to do with the file's overlapping calls (already billed or pending from another file):
    ``skip`` (set them aside, the default) or ``bill`` (an operator chose to bill them anyway)."""
    overlapping_calls: Mapped[int | None] = mapped_column(Integer)
    """Calls of this file that overlap calls of other files (or repeat its own rows); set when rated."""
    overlaps: Mapped[str | None] = mapped_column(Text)
    """The mark an operator sees: "overlaps N call(s) of file(s) X, Y" (set when the file is rated)."""
    carrier: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))  # cdr | sdr
    period: Mapped[str] = mapped_column(String(8))  # daily | monthly
    direction: Mapped[str] = mapped_column(String(8))  # outbound | inbound
    original_name: Mapped[str] = mapped_column(String(500))
    size: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16))  # upload | collector | mailgate
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(16))
    """held | accepted | discarded | parsed | rated | failed"""
    status_reason: Mapped[str | None] = mapped_column(Text)
    rows: Mapped[int | None] = mapped_column(Integer)
    rejected: Mapped[int | None] = mapped_column(Integer)
    calls: Mapped[int | None] = mapped_column(Integer)
    calls_expected: Mapped[int | None] = mapped_column(Integer)
    """Records the parser's summary announced: the file is rated once ``calls_stored`` reaches it."""
    calls_stored: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Calls stored so far, counted up by each batch as the invoicer stores it (repeats add nothing)."""
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    @validates("status_reason")
    def _short_reason(self, _key: str, reason: str | None) -> str | None:
        return shorten(reason)

    def metadata_for_event(self) -> dict[str, object]:
        """The file's metadata as every file-level event carries it."""
        return {
            "file_id": self.id,
            "fingerprint": self.fingerprint,
            "carrier": self.carrier,
            "kind": self.kind,
            "period": self.period,
            "direction": self.direction,
            "original_name": self.original_name,
            "size": self.size,
        }


class FileCandidate(Base):
    """An earlier file that a held file may repeat (same fingerprint)."""

    __tablename__ = "file_candidates"

    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), primary_key=True)
    candidate_file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), primary_key=True)


class FingerprintClaim(Base):
    """The first file with a content fingerprint. Every file tries to insert its claim; the
    insert conflict is what tells a later copy it is a copy, even when two copies arrive at the
    same moment through two gateways and are handled by two processes."""

    __tablename__ = "fingerprint_claims"

    content_fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"))


class FileNameClaim(Base):
    """The first file of a carrier with a file name (for the carrier rule "same name")."""

    __tablename__ = "file_name_claims"

    carrier: Mapped[str] = mapped_column(String(64), primary_key=True)
    original_name: Mapped[str] = mapped_column(String(500), primary_key=True)
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"))


class FileDecision(Base):
    """An operator's release or discard of a held file: who, when and why. One per file, so a
    held file is decided once; a repeated command finds its decision here and changes nothing."""

    __tablename__ = "file_decisions"

    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), primary_key=True)
    command: Mapped[str] = mapped_column(String(16))  # release | discard
    operator: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    command_id: Mapped[str] = mapped_column(String(36))
    decided_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FileReversal(Base):
    """An operator's reversal of a processed file (``cdrflow files reverse``): who, when and why.
    Apart from ``file_decisions`` because a file released from hold (one decision) may be reversed
    later (a second); one per file, as a reversed file is final."""

    __tablename__ = "file_reversals"

    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), primary_key=True)
    operator: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    command_id: Mapped[str] = mapped_column(String(36))
    reversed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RejectedRow(Base):
    __tablename__ = "rejected_rows"

    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), primary_key=True)
    row: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1-based line number in the file
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)


class CarrierTransaction(Base):
    """One fixed fee from a carrier's SDR file (a line rental, connection, cease, equipment).

    ``amount`` is the carrier's charge (negative for a credit); ``period_end`` is exclusive.
    Billing runs turn these into billing transactions priced by the fixed-fee tariff."""

    __tablename__ = "carrier_transactions"
    __table_args__ = (UniqueConstraint("file_id", "row", name="uq_carrier_transactions_file_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), index=True)
    row: Mapped[int] = mapped_column(Integer)  # 1-based line number in the file
    carrier: Mapped[str] = mapped_column(String(64))
    reference: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    event_type: Mapped[str | None] = mapped_column(String(32))
    period_start: Mapped[date | None] = mapped_column(Date)
    period_end: Mapped[date | None] = mapped_column(Date)
    effective_date: Mapped[date | None] = mapped_column(Date)
    quantity: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal | None] = mapped_column(Money)
    pro_rata: Mapped[bool] = mapped_column(Boolean)
    account_code: Mapped[str | None] = mapped_column(String(64))


class FormatDefinitionRecord(Base):
    """A custom file format an operator defined (``cdrflow formats add``): its TOML text, as
    written, checked when saved. ``version`` counts saves, so a change is visible."""

    __tablename__ = "format_definitions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # cdr | sdr
    description: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CarrierFormat(Base):
    """Which format reads a carrier's CDR (or SDR) files, with the carrier's own options: the
    zone its switch writes local times in, the share of bad rows that fails a file. Without a
    row here a carrier's CDR files are read in ``Carrier.file_format``."""

    __tablename__ = "carrier_formats"

    carrier: Mapped[str] = mapped_column(ForeignKey("carriers.code"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # cdr | sdr
    format: Mapped[str] = mapped_column(String(64))
    zone: Mapped[str | None] = mapped_column(String(64))  # IANA name, e.g. Europe/London
    max_reject_share: Mapped[float | None] = mapped_column(Float)  # 0..1; null: the format's own


class Call(Base):
    """One call from a carrier's CDR, as rated. ``row`` is its line number in the file."""

    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("file_id", "row", name="uq_calls_file_row"),
        Index("ix_calls_outstanding", "customer", "status", "invoice_id"),
        # An invoice's calls (its CSV, a credit note freeing them); partial, so storing calls costs nothing.
        Index("ix_calls_invoice", "invoice_id", postgresql_where=text("invoice_id IS NOT NULL"),
              sqlite_where=text("invoice_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    file_id: Mapped[str] = mapped_column(String(36))
    """The file's id: no foreign key checked per row (migration 0008 says why); the
    (file_id, row) key is the index on it."""
    row: Mapped[int] = mapped_column(Integer)
    carrier: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8))
    cli: Mapped[str] = mapped_column(String(32))  # normalised
    dialled: Mapped[str] = mapped_column(String(32))  # normalised
    start: Mapped[datetime] = mapped_column(UtcDateTime)
    duration: Mapped[int] = mapped_column(Integer)  # seconds
    answered: Mapped[bool] = mapped_column(Boolean, default=True)
    charge_code: Mapped[str | None] = mapped_column(String(64))
    account_code: Mapped[str | None] = mapped_column(String(64))
    cdr_cost: Mapped[Decimal | None] = mapped_column(Money)
    """The carrier's own cost as its CDR gave it (kept apart so a re-rate can tell)."""
    customer: Mapped[str | None] = mapped_column(String(64))
    tariff: Mapped[str | None] = mapped_column(String(64))
    code: Mapped[str | None] = mapped_column(String(64))
    destination: Mapped[str | None] = mapped_column(String(200))
    band: Mapped[str | None] = mapped_column(String(8))
    billable_seconds: Mapped[int | None] = mapped_column(Integer)
    charge: Mapped[Decimal | None] = mapped_column(Money)
    cost: Mapped[Decimal | None] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(16))  # rated | unmatched | unrated
    reason: Mapped[str | None] = mapped_column(Text)
    invoice_id: Mapped[int | None] = mapped_column(Integer)
    """The invoice that billed the call (set by the invoice's own transaction; no foreign key)."""
    overlaps_file_id: Mapped[str | None] = mapped_column(String(36))
    """For an overlapping call: the file whose call (same carrier, CLI, dialled, start, duration) came first."""
    set_aside: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """An overlapping call kept out of billing runs (its file's overlap policy is ``skip``)."""


class CallUsageClaim(Base):
    """The first call with a usage (carrier, CLI, dialled, start, duration): a later call with the
    same usage overlaps it. The key leads with the call's start second, so the claims of one file
    (written in time order) land side by side in the index; the primary key makes the check one
    index probe per call, and lets the database, not a process, decide which of two concurrent
    files came first."""

    __tablename__ = "call_usage_claims"
    __table_args__ = {"sqlite_with_rowid": False}  # clustered on the key: no second B-tree

    usage_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    """The call's start, whole seconds since 1970-01-01 UTC."""
    usage_hash: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    """Signed 64-bit BLAKE2b of carrier, CLI, dialled, start (microseconds) and duration."""
    file_id: Mapped[str] = mapped_column(String(36))
    row: Mapped[int] = mapped_column(Integer)


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("customer", "period_start", "period_end", name="uq_invoices_customer_period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    number: Mapped[str | None] = mapped_column(String(32), unique=True)
    run_id: Mapped[str] = mapped_column(String(36))
    customer: Mapped[str] = mapped_column(ForeignKey("customers.code"))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)  # exclusive
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    total: Mapped[Decimal] = mapped_column(Money)
    calls_csv: Mapped[str | None] = mapped_column(String(64))
    """Fingerprint of the CSV of the invoice's calls in the file store."""
    currency: Mapped[str] = mapped_column(String(3), default="GBP", server_default="GBP")
    net: Mapped[Decimal | None] = mapped_column(Money)
    tax: Mapped[Decimal | None] = mapped_column(Money)
    issued_on: Mapped[date | None] = mapped_column(Date)
    """The invoice's date in the operator's zone."""
    due_on: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(12), default="issued", server_default="issued")
    """issued | credited (a credit note voided it in full)."""
    document: Mapped[str | None] = mapped_column(String(64))
    """Fingerprint of the invoice's PDF in the file store (rendered after the run)."""

    charges: Mapped[list[Charge]] = relationship(back_populates="invoice", order_by="Charge.id")


class Charge(Base):
    """One line of an invoice, e.g. "Call Charges"."""

    __tablename__ = "charges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    description: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Money)
    tax_code: Mapped[str] = mapped_column(String(16), default="standard", server_default="standard")
    kind: Mapped[str] = mapped_column(String(12), default="calls", server_default="calls")
    """calls (the Call Charges line) | fee (a carrier's fixed fee) | recurring | one-off"""
    covered_from: Mapped[date | None] = mapped_column(Date)
    covered_to: Mapped[date | None] = mapped_column(Date)  # exclusive
    customer_charge_id: Mapped[int | None] = mapped_column(Integer)
    """For a recurring or one-off line: the customer charge it bills (a credit note moves that
    charge's ``billed_until`` back to the line's ``covered_from``)."""

    invoice: Mapped[Invoice] = relationship(back_populates="charges")


class NumberSequence(Base):
    """A gap-free document number sequence (invoices, credit notes): the next value is taken by an
    ``UPDATE … RETURNING`` inside the issuing transaction, so a rolled-back run uses no number."""

    __tablename__ = "number_sequences"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16))
    next_value: Mapped[int] = mapped_column(Integer, default=1)


class CreditNote(Base):
    """Voids an issued invoice in full (one per invoice); its calls and charges become unbilled again."""

    __tablename__ = "credit_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), unique=True)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    operator: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    net: Mapped[Decimal] = mapped_column(Money)
    tax: Mapped[Decimal] = mapped_column(Money)
    total: Mapped[Decimal] = mapped_column(Money)
    document: Mapped[str | None] = mapped_column(String(64))


class BillingRun(Base):
    """One customer's period closed for billing, once: by the scheduler (after the grace) or by an
    operator (``cdrflow bill``). The unique key makes a second close, or a second scheduler, a no-op."""

    __tablename__ = "billing_runs"
    __table_args__ = (UniqueConstraint("customer", "period_start", "period_end", name="uq_billing_runs_customer_period"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the run id run-closed carries
    customer: Mapped[str] = mapped_column(ForeignKey("customers.code"))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)  # exclusive
    closed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closed_by: Mapped[str] = mapped_column(String(200))  # "scheduler" or the operator
    reason: Mapped[str | None] = mapped_column(Text)  # why a period not yet ended was closed (--force)


class CustomerCharge(Base):
    """A charge defined in cdrflow itself: recurring (monthly, quarterly, yearly; billed in advance,
    pro-rata at the edges) or one-off (``frequency`` once, due on ``start``).
    ``billed_until`` (exclusive) is how far billing runs have billed it."""

    __tablename__ = "customer_charges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer: Mapped[str] = mapped_column(ForeignKey("customers.code"), index=True)
    description: Mapped[str] = mapped_column(String(200))
    amount: Mapped[Decimal] = mapped_column(Money)
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    frequency: Mapped[str] = mapped_column(String(12))  # monthly | quarterly | yearly | once
    start: Mapped[date] = mapped_column(Date)
    end: Mapped[date | None] = mapped_column(Date)  # exclusive
    billed_until: Mapped[date | None] = mapped_column(Date)
    tax_code: Mapped[str | None] = mapped_column(String(16))
    """None: the customer's."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(200))


class FeeSheetVersion(Base):
    """A fixed-fee sheet (``services.rater.feesheet``) loaded for a tariff; the newest version is in use."""

    __tablename__ = "fee_sheets"
    __table_args__ = (UniqueConstraint("tariff", "version", name="uq_fee_sheets_tariff_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tariff: Mapped[str] = mapped_column(ForeignKey("tariffs.code"))
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(500))
    fingerprint: Mapped[str] = mapped_column(String(64))
    """The sheet's CSV in the file store."""
    rows: Mapped[int] = mapped_column(Integer)
    loaded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class BillingTransaction(Base):
    """A carrier transaction as billing sees it: matched to a customer and priced by the customer's
    fixed-fee sheet, or not (with the reason, for reconciliation). One per carrier transaction."""

    __tablename__ = "billing_transactions"
    __table_args__ = (Index("ix_billing_transactions_outstanding", "customer", "status", "invoice_id"),)

    carrier_transaction_id: Mapped[int] = mapped_column(ForeignKey("carrier_transactions.id"), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(36), index=True)
    customer: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12))
    """priced | unmatched (no customer) | unpriced (no sheet row) | information (the carrier's SDR files are not billed)"""
    reason: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    price: Mapped[Decimal | None] = mapped_column(Money)
    cost: Mapped[Decimal | None] = mapped_column(Money)
    charge_on: Mapped[date | None] = mapped_column(Date)
    """The day the fee belongs to (its period's start or effective date): a run bills those before its end."""
    invoice_id: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class InvoiceDelivery(Base):
    """An invoice's (or credit note's) email to the customer: queued, sending, sent or failed, with
    attempts and the last error; retried with backoff. ``message_id`` is fixed per document, and a
    delivery left ``sending`` by a crash is not sent again blindly (docs/billing.md says how)."""

    __tablename__ = "invoice_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_number: Mapped[str] = mapped_column(String(32), index=True)
    """The invoice's or credit note's number."""
    to_address: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(12))  # queued | sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    requested_by: Mapped[str] = mapped_column(String(200))  # "invoicer" or the operator who resent it
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OutboxEntry(Base):
    """An event committed with the state change it announces, published afterwards."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_publisher_pending", "publisher", "published_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    publisher: Mapped[str] = mapped_column(String(32), default="invoicer", server_default="invoicer")
    """The service whose relay publishes the entry (``admin`` for uploads, billing runs and
    replays; ``invoicer`` for invoice-issued), so two services' relays never race for a row."""


class DeadLetter(Base):
    """A message a service could not process, kept with its error and original payload.

    Also published to the topic's dead-letter topic; this row is what operators list, show and
    replay (``cdrflow dlq``). Unique by where the message was read, so a repeat of the same
    failure (a crash after dead-lettering) records it once."""

    __tablename__ = "dead_letters"
    __table_args__ = (UniqueConstraint("service", "topic", "partition", "offset", name="uq_dead_letters_where"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(32), index=True)
    topic: Mapped[str] = mapped_column(String(200))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[str | None] = mapped_column(Text)
    event_id: Mapped[str | None] = mapped_column(String(200))
    event_type: Mapped[str | None] = mapped_column(String(200))
    file_id: Mapped[str | None] = mapped_column(String(36), index=True)
    """The file the message was about, when it names one (that file is then marked failed)."""
    file_status: Mapped[str | None] = mapped_column(String(16))
    """The file's status before this letter failed it: a replay puts it back, so the replayed
    message finds the file where it was."""
    error_type: Mapped[str] = mapped_column(String(100))
    error: Mapped[str] = mapped_column(Text)
    """Truncated to ``REASON_MAX_CHARS``; the payload is kept whole."""
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    failed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    replayed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    replayed_by: Mapped[str | None] = mapped_column(String(200))


class Source(Base):
    """A carrier's FTP, FTPS or SFTP server that the collector polls, with what it last found there."""

    __tablename__ = "sources"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    carrier: Mapped[str] = mapped_column(ForeignKey("carriers.code"))
    protocol: Mapped[str] = mapped_column(String(8))  # ftp | ftps | sftp
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(200))
    secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    """Password, private key and passphrase as one Fernet token (key: settings.secret_key); never plain."""
    remote_dir: Mapped[str] = mapped_column(String(500))
    rules: Mapped[str] = mapped_column(Text)
    """JSON list of {pattern, kind, period, direction}; pattern is a glob relative to remote_dir."""
    poll_interval: Mapped[int] = mapped_column(Integer)  # seconds
    delete_after_collect: Mapped[bool] = mapped_column(Boolean)
    verify_tls: Mapped[bool] = mapped_column(Boolean)
    host_key: Mapped[str | None] = mapped_column(Text)
    """The pinned SSH host key (OpenSSH public key line) an SFTP server must present."""
    tls_ca: Mapped[str | None] = mapped_column(Text)
    """PEM CA (or self-signed) certificate an FTPS server must chain to; empty: the system's CAs."""
    enabled: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[str] = mapped_column(String(16))  # new | ok | failing
    failures: Mapped[int] = mapped_column(Integer)  # consecutive failed polls
    last_error: Mapped[str | None] = mapped_column(Text)
    last_poll_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_poll_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    collected: Mapped[int] = mapped_column(Integer)  # files collected so far


class CollectedFile(Base):
    """A remote file the collector fetched: fetched again only if its size or mtime changes."""

    __tablename__ = "collected_files"

    source: Mapped[str] = mapped_column(ForeignKey("sources.name"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1000), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)  # bytes
    mtime: Mapped[int] = mapped_column(BigInteger)  # seconds since the epoch, as the server reports it
    fingerprint: Mapped[str] = mapped_column(String(64))
    file_id: Mapped[str] = mapped_column(String(36))
    collected_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MailMessage(Base):
    """A message the mail gateway accepted: its raw bytes are in the file store under ``fingerprint``,
    committed before the gateway answered 250."""

    __tablename__ = "mail_messages"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[str] = mapped_column(Text)  # JSON list of addresses
    authenticated_as: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | processed
    outcome: Mapped[str | None] = mapped_column(Text)
    """JSON: files announced, parts ignored (signature images) and parts refused, each with its reason."""
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class FilePartParsed(Base):
    """One part of a large file parsed (``services.parser.parts``): its counts. The part that
    finds every part of its file here sends the file's summary (a repeat changes nothing)."""

    __tablename__ = "file_parts"

    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    parts: Mapped[int] = mapped_column(Integer)
    """How many parts the file was cut into."""
    rows: Mapped[int] = mapped_column(Integer)
    records: Mapped[int] = mapped_column(Integer)
    rejected: Mapped[int] = mapped_column(Integer)
    skipped: Mapped[int] = mapped_column(Integer)
    batches: Mapped[int] = mapped_column(Integer)
    parsed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class User(Base):
    """Someone who may use the console or the API (``services.admin.auth``): a name, a role
    (viewer, operator, admin) and an argon2 password hash. The built-in ``local-admin`` has no
    password: it acts only through its API token, the one the CLI reads from ``<data_dir>/admin.token``."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    """Set: the user can't log in, and their sessions and tokens are refused."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiToken(Base):
    """An API token for automation. Only the SHA-256 of the token is kept: the token itself is
    shown once, when it is made, and can't be read back."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    """The label its owner gave it (what it is for)."""
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AuditEntry(Base):
    """One state change made through the API, the console or the user commands: who, what, on
    what, why. Written in the transaction of the change itself, so neither exists without the other."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    user: Mapped[str | None] = mapped_column(String(64))
    """Who: a user's name (None: nobody logged in, e.g. a failed login)."""
    action: Mapped[str] = mapped_column(String(64))
    """What, as ``noun.verb``: ``file.release``, ``billing-run.close``, ``user.add``..."""
    target: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict | None] = mapped_column(JSON)
