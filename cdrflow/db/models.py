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
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from cdrflow.db.types import Money, UtcDateTime


class Base(DeclarativeBase):
    pass


class Carrier(Base):
    __tablename__ = "carriers"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    file_format: Mapped[str] = mapped_column(String(64), default="generic-cdr")


class Customer(Base):
    __tablename__ = "customers"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    billing_email: Mapped[str | None] = mapped_column(String(320))
    per_minute_rate: Mapped[Decimal] = mapped_column(Money)
    """Flat retail rate per minute (the foundation's rating; tariffs replace it)."""

    clis: Mapped[list[CustomerCli]] = relationship(back_populates="customer", cascade="all, delete-orphan")


class CustomerCli(Base):
    """A CLI (E.164 digits, no '+') that identifies the customer on carriers' CDRs."""

    __tablename__ = "customer_clis"

    cli: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_code: Mapped[str] = mapped_column(ForeignKey("customers.code"), index=True)

    customer: Mapped[Customer] = relationship(back_populates="clis")


class File(Base):
    """A file as received: its bytes live in the file store under ``fingerprint``."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
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
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

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


class RejectedRow(Base):
    __tablename__ = "rejected_rows"

    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), primary_key=True)
    row: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1-based line number in the file
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)


class Call(Base):
    """One call from a carrier's CDR, as rated. ``row`` is its line number in the file."""

    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("file_id", "row", name="uq_calls_file_row"),
        Index("ix_calls_outstanding", "customer", "status", "invoice_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"))
    row: Mapped[int] = mapped_column(Integer)
    carrier: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8))
    cli: Mapped[str] = mapped_column(String(32))
    dialled: Mapped[str] = mapped_column(String(32))
    start: Mapped[datetime] = mapped_column(UtcDateTime)
    duration: Mapped[int] = mapped_column(Integer)  # seconds
    customer: Mapped[str | None] = mapped_column(String(64))
    charge: Mapped[Decimal | None] = mapped_column(Money)
    cost: Mapped[Decimal | None] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(16))  # rated | unmatched | unrated
    reason: Mapped[str | None] = mapped_column(Text)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))


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

    charges: Mapped[list[Charge]] = relationship(back_populates="invoice", order_by="Charge.id")


class Charge(Base):
    """One line of an invoice, e.g. "Call Charges"."""

    __tablename__ = "charges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    description: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Money)

    invoice: Mapped[Invoice] = relationship(back_populates="charges")


class OutboxEntry(Base):
    """An event committed with the state change it announces, published afterwards."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
