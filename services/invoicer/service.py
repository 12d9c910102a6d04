"""Invoicer service: call-rated → calls ledger (once per (file, row)); run-closed → invoice,
published as invoice-issued through the transactional outbox."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from cdrflow.bus import Outgoing, ServiceLoop, Topic, topic_name
from cdrflow.bus.outbox import OutboxRelay, add_to_outbox
from cdrflow.db.models import Call, Charge, Customer, File, Invoice
from cdrflow.db.upsert import insert_new
from cdrflow.errors import BadEventError
from cdrflow.events import Event, EventType, event_id
from cdrflow.log import get_logger
from cdrflow.money import format_money, to_money
from cdrflow.runtime import Runtime
from services.invoicer.invoice import CALL_CHARGES, InvoiceCall, call_charges_total, calls_csv
from services.invoicer.periods import Period

log = get_logger(__name__)


class Invoicer:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.zone = runtime.settings.zone

    # --- the calls ledger ------------------------------------------------------

    def on_call_rated(self, event: Event, session: Session) -> Iterator[Outgoing]:
        event.require("file_id", "part")
        d = event.data
        if d["part"] == "summary":
            self._file_rated(session, d)
            return iter(())
        event.require("carrier", "direction", "calls")
        rows = [self._call_row(d, c) for c in d["calls"]]
        if d["part"] == "rerate":
            changed = self._apply_rerate(session, rows)
            log.info("calls_rerated", file_id=d["file_id"], calls=len(rows), changed=changed,
                     reference_version=d.get("reference_version"))
        else:
            inserted = insert_new(session, Call.__table__, rows, key=("file_id", "row"))
            log.info("calls_stored", file_id=d["file_id"], batch=d.get("batch"), inserted=inserted,
                     repeated=len(rows) - inserted)
        return iter(())

    @staticmethod
    def _call_row(d: dict, c: dict) -> dict:
        def money(key: str) -> Decimal | None:
            return None if c.get(key) is None else to_money(c[key])

        return {
            "file_id": d["file_id"], "row": c["row"], "carrier": d["carrier"],
            "direction": c.get("direction") or d["direction"], "cli": c["cli"], "dialled": c["dialled"],
            "start": datetime.fromisoformat(c["start"]), "duration": c["duration"],
            "answered": c.get("answered", True), "charge_code": c.get("charge_code"),
            "account_code": c.get("account_code"), "cdr_cost": money("cdr_cost"), "customer": c.get("customer"),
            "tariff": c.get("tariff"), "code": c.get("code"), "destination": c.get("destination"),
            "band": c.get("band"), "billable_seconds": c.get("billable_seconds"), "charge": money("charge"),
            "cost": money("cost"), "status": c["status"], "reason": c.get("reason"),
        }

    @staticmethod
    def _apply_rerate(session: Session, rows: list[dict]) -> int:
        """Re-rated calls replace their earlier rating only while still in reconciliation and
        not invoiced: a call once rated and billed is never priced again behind the invoice."""
        table = Call.__table__
        changing = ("customer", "tariff", "code", "destination", "band", "billable_seconds", "charge", "cost",
                    "status", "reason")
        stmt = update(table).where(
            table.c.file_id == bindparam("k_file_id"), table.c.row == bindparam("k_row"),
            # not status.in_(): an IN list is an "expanding" parameter, which executemany refuses
            or_(table.c.status == "unmatched", table.c.status == "unrated"), table.c.invoice_id.is_(None),
        ).values({name: bindparam(f"v_{name}", type_=table.c[name].type) for name in changing})
        params = [{"k_file_id": r["file_id"], "k_row": r["row"], **{f"v_{n}": r[n] for n in changing}} for r in rows]
        result = session.execute(stmt, params)
        return max(result.rowcount, 0)

    def _file_rated(self, session: Session, d: dict) -> None:
        file = session.get(File, d["file_id"])
        if file is None:
            raise BadEventError(f"call-rated summary names unknown file {d['file_id']}")
        stored = session.scalar(select(func.count()).select_from(Call).where(Call.file_id == file.id))
        file.calls, file.status, file.updated_at = stored, "rated", datetime.now(UTC)
        log.info("file_rated", file_id=file.id, calls=stored, expected=d.get("records"))

    # --- billing runs ------------------------------------------------------------

    def on_run_closed(self, event: Event, session: Session) -> Iterator[Outgoing]:
        event.require("run_id", "customer", "period", "period_start", "period_end")
        d = event.data
        period = Period(date.fromisoformat(d["period_start"]), date.fromisoformat(d["period_end"]))
        if session.get(Customer, d["customer"]) is None:
            raise BadEventError(f"billing run {d['run_id']} names unknown customer {d['customer']!r}")
        existing = session.scalar(select(Invoice).where(
            Invoice.customer == d["customer"], Invoice.period_start == period.start, Invoice.period_end == period.end))
        if existing is not None:
            log.info("invoice_exists", customer=d["customer"], period=period.label, invoice=existing.number)
            return iter(())
        self._issue(session, d["run_id"], d["customer"], period)
        return iter(())

    def _issue(self, session: Session, run_id: str, customer: str, period: Period) -> None:
        _, end_utc = period.utc_bounds(self.zone)
        # Every outstanding rated call up to the period's end: late calls of earlier periods too.
        outstanding = session.scalars(
            select(Call).where(Call.customer == customer, Call.status == "rated",
                               Call.invoice_id.is_(None), Call.start < end_utc)
            .order_by(Call.start, Call.file_id, Call.row)
        ).all()
        calls = [InvoiceCall(c.file_id, c.row, c.carrier, c.cli, c.dialled, c.start, c.duration, c.charge)
                 for c in outstanding]
        total = call_charges_total(calls)
        csv_file = self.runtime.store.put_bytes(calls_csv(calls, self.zone))
        invoice = Invoice(run_id=run_id, customer=customer, period_start=period.start, period_end=period.end,
                          issued_at=datetime.now(UTC), total=total, calls_csv=csv_file.fingerprint)
        session.add(invoice)
        session.flush()
        invoice.number = f"INV-{invoice.id:06d}"
        session.add(Charge(invoice_id=invoice.id, description=CALL_CHARGES, quantity=len(calls), amount=total))
        if outstanding:
            session.execute(update(Call).where(Call.id.in_([c.id for c in outstanding])).values(invoice_id=invoice.id))
        issued = Event(
            type=EventType.INVOICE_ISSUED, source=self.runtime.source, subject=invoice.number,
            id=event_id(EventType.INVOICE_ISSUED, customer, period.start, period.end),
            data={
                "invoice_number": invoice.number, "run_id": run_id, "customer": customer,
                "period": period.label, "period_start": period.start.isoformat(),
                "period_end": period.end.isoformat(), "issued_at": invoice.issued_at.isoformat(),
                "total": format_money(total),
                "charges": [{"description": CALL_CHARGES, "quantity": len(calls), "amount": format_money(total)}],
                "calls_csv": csv_file.fingerprint,
            },
        )
        add_to_outbox(session, topic_name(self.runtime.settings.namespace, Topic.INVOICE_ISSUED), customer, issued)
        log.info("invoice_issued", invoice=invoice.number, customer=customer, period=period.label,
                 calls=len(calls), total=format_money(total))


def build_loop(runtime: Runtime) -> ServiceLoop:
    invoicer = Invoicer(runtime)
    relay = OutboxRelay(runtime.database, runtime.producer)
    s = runtime.settings
    return ServiceLoop(
        service="invoicer", namespace=s.namespace, bootstrap=s.bootstrap, database=runtime.database,
        producer=runtime.producer,
        handlers={Topic.CALL_RATED: invoicer.on_call_rated, Topic.RUN_CLOSED: invoicer.on_run_closed},
        on_idle=relay.publish_pending,
    )
