"""Invoicer service: call-rated → calls ledger (once per (file, row), overlapping calls set aside);
run-closed → invoice, published as invoice-issued through the transactional outbox;
admin-commands → a file's choice to bill or skip its overlapping calls.

A file's batches come on several partitions (keyed by file and batch), to several invoicer
instances, in any order, its summary among them: the file is ``rated`` when the calls stored
(``files.calls_stored``, counted up by each batch as it is stored) reach the records its summary
announced (``files.calls_expected``). Both counts change by an UPDATE of the file's row, which
locks it, so of two instances storing a file's last batch and its summary at once, the second
sees the first's count and finishes the file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import polars as pl
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from cdrflow.batches import from_columns
from cdrflow.bus import Outgoing, ServiceLoop, Topic, topic_name
from cdrflow.bus.outbox import OutboxRelay, add_to_outbox
from cdrflow.callrecords import CALL_SCHEMA
from cdrflow.db.models import Call, Customer, File, Invoice
from cdrflow.errors import BadEventError, NotYetVisibleError
from cdrflow.events import Event
from cdrflow.log import get_logger
from cdrflow.money import from_micros
from cdrflow.runtime import Runtime
from services.invoicer.billing import Run, invoice_issued, issue_invoices
from services.invoicer.ledger import CALL_COLUMNS, store_calls
from services.invoicer.overlap import OVERLAP_COMMANDS, SKIP, overlap_summary
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
            self._summary(session, d)
            return iter(())
        event.require("carrier", "direction", "calls")
        rated = from_columns(d["calls"], CALL_SCHEMA)
        check_currencies(session, d, rated)
        calls = ledger_frame(d, rated)  # the ledger keeps no currency: the customer's is the calls'
        if d["part"] == "rerate":
            rows = calls.to_dicts()
            for row in rows:  # the Money column type binds Decimal amounts
                for name in ("charge", "cost", "cdr_cost"):
                    row[name] = None if row[name] is None else from_micros(row[name])
            changed = self._apply_rerate(session, rows)
            log.info("calls_rerated", file_id=d["file_id"], calls=len(rows), changed=changed,
                     reference_version=d.get("reference_version"))
            return iter(())

        def policy(file_id: str) -> str:
            file = session.get(File, file_id)
            return file.overlap_policy if file is not None else SKIP

        stored = store_calls(session, calls, overlap_policy_of=policy)
        log.info("calls_stored", file_id=d["file_id"], batch=d.get("batch"), inserted=stored.inserted,
                 repeated=stored.repeated, overlapping=stored.overlapping)
        if stored.inserted:
            self._count_stored(session, d["file_id"], stored.inserted)
        return iter(())

    def _count_stored(self, session: Session, file_id: str, inserted: int) -> None:
        counts = session.execute(
            update(File).where(File.id == file_id)
            .values(calls_stored=File.calls_stored + inserted, updated_at=datetime.now(UTC))
            .returning(File.calls_stored, File.calls_expected)).one_or_none()
        if counts is None:
            raise NotYetVisibleError(f"call-rated batch names file {file_id}, which is not in the database")
        stored, expected = counts
        if expected is not None and stored >= expected:
            self._file_rated(session, file_id)

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

    def _summary(self, session: Session, d: dict) -> None:
        """The summary says how many calls the file has; once that many are stored, it is rated.
        (A fixed-fee file's records are carrier transactions, stored by the parser: no batches.)"""
        expected_calls = d.get("records", 0) if d.get("batches") else 0
        counts = session.execute(
            update(File).where(File.id == d["file_id"]).values(calls_expected=expected_calls)
            .returning(File.calls_stored, File.calls_expected)).one_or_none()
        if counts is None:
            raise NotYetVisibleError(f"call-rated summary names file {d['file_id']}, which is not in the database")
        stored, expected = counts
        if expected is None or stored >= expected:
            self._file_rated(session, d["file_id"])
        else:
            log.info("file_waiting_for_batches", file_id=d["file_id"], stored=stored, expected=expected)

    def _file_rated(self, session: Session, file_id: str) -> None:
        file = session.get(File, file_id, populate_existing=True)
        assert file is not None
        if file.status not in ("parsed", "rated"):
            # failed (a batch was dead-lettered: it says so) or sent back by a retry: this pass
            # is not the file's last word
            log.info("file_rated_summary_ignored", file_id=file.id, status=file.status)
            return
        stored = session.scalar(select(func.count()).select_from(Call).where(Call.file_id == file.id))
        file.calls, file.status, file.updated_at = stored, "rated", datetime.now(UTC)
        counts = dict(session.execute(
            select(Call.overlaps_file_id, func.count()).where(Call.file_id == file.id, Call.overlaps_file_id.is_not(None))
            .group_by(Call.overlaps_file_id)).all())
        names = dict(session.execute(select(File.id, File.original_name).where(File.id.in_(counts))).all()) if counts else {}
        file.overlapping_calls = sum(counts.values())
        file.overlaps = overlap_summary(counts, names) if counts else None
        log.info("file_rated", file_id=file.id, calls=stored, expected=file.calls_expected,
                 overlapping=file.overlapping_calls, overlaps=file.overlaps)

    def on_admin_command(self, event: Event, session: Session) -> Iterator[Outgoing]:
        """bill-overlaps / skip-overlaps: the operator's choice for one file's overlapping calls.
        Calls already invoiced stay as they are; the rest follow the choice. Repeats change nothing.
        credit and reverse: ``services.invoicer.credit`` (a credit note; a file out of billing)."""
        from services.invoicer import credit

        event.require("command")
        if event.data["command"] == credit.CREDIT:
            return self._credit(event, session)
        event.require("file_id")
        if event.data["command"] == credit.REVERSE:
            return self._reverse(event, session)
        policy = OVERLAP_COMMANDS.get(event.data["command"])
        if policy is None:
            return iter(())  # release and discard are the dedupe service's
        file = session.get(File, event.data["file_id"])
        if file is None:
            raise NotYetVisibleError(f"admin command {event.data['command']} names file {event.data['file_id']}, "
                                     "which is not in the database")
        file.overlap_policy, file.updated_at = policy, datetime.now(UTC)
        changed = session.execute(
            update(Call).where(Call.file_id == file.id, Call.overlaps_file_id.is_not(None), Call.invoice_id.is_(None))
            .values(set_aside=policy == SKIP)).rowcount
        log.info("overlap_policy_set", file_id=file.id, policy=policy, calls=changed,
                 operator=event.data.get("operator"), reason=event.data.get("reason"))
        return iter(())

    def _credit(self, event: Event, session: Session) -> Iterator[Outgoing]:
        """A credit note for the invoice, announced through the outbox with the state it records.
        A repeat (the same command after a crash, or a second credit) finds the invoice credited
        and changes nothing; the refusal says by which credit note."""
        from services.invoicer import credit

        event.require("invoice_number")
        d = event.data
        try:
            done = credit.credit_invoice(session, d["invoice_number"], operator=d.get("operator") or "operator",
                                         reason=d.get("reason") or "", now=datetime.now(UTC),
                                         prefix=self.runtime.settings.credit_note_prefix)
        except credit.CreditRefusedError as exc:
            log.warning("admin_command_refused", command=credit.CREDIT, invoice=d["invoice_number"],
                        command_id=event.id, error=str(exc))
            return iter(())
        issued = credit.credit_note_event(done, self.runtime.source)
        add_to_outbox(session, topic_name(self.runtime.settings.namespace, Topic.CREDIT_NOTE_ISSUED),
                      done.invoice.customer, issued)
        log.info("credit_note_issued", credit_note=done.note.number, invoice=done.invoice.number,
                 customer=done.invoice.customer, total=str(done.note.total), calls=done.calls,
                 transactions=done.transactions, customer_charges=done.customer_charges, command_id=event.id)
        return iter(())

    def _reverse(self, event: Event, session: Session) -> Iterator[Outgoing]:
        """The file leaves billing (``credit.reverse_file``); refused, with the reason, once any
        of it is on an issued invoice. A repeat finds the file reversed and changes nothing."""
        from services.invoicer import credit

        d = event.data
        if session.get(File, d["file_id"]) is None:
            raise NotYetVisibleError(f"admin command reverse names file {d['file_id']}, which is not in the database")
        try:
            done = credit.reverse_file(session, d["file_id"], operator=d.get("operator") or "operator",
                                       reason=d.get("reason") or "", command_id=event.id, now=datetime.now(UTC))
        except credit.ReverseRefusedError as exc:
            log.warning("admin_command_refused", command=credit.REVERSE, file_id=d["file_id"],
                        command_id=event.id, error=str(exc))
            return iter(())
        if done is not None:
            log.info("file_reversed", file_id=done.file_id, calls=done.calls, transactions=done.transactions,
                     claims_handed_over=done.claims_handed_over, operator=d.get("operator"), reason=d.get("reason"))
        return iter(())

    # --- billing runs ------------------------------------------------------------

    def on_run_closed(self, event: Event, session: Session) -> Iterator[Outgoing]:
        return self.on_runs_closed([event], session)

    def on_runs_closed(self, events: list[Event], session: Session) -> Iterator[Outgoing]:
        """Billing runs closed (a batch the service loop hands over, in the order consumed): an
        invoice for each run not yet invoiced, issued together (``billing.issue_invoices``),
        each with its invoice-issued event in the outbox, all in this one transaction. A run
        whose customer and period have an invoice already (a repeat, or a run issued before a
        crash) makes nothing new; the same run twice in one batch is issued once."""
        wanted: dict[tuple[str, date, date], dict] = {}
        for event in events:
            event.require("run_id", "customer", "period", "period_start", "period_end")
            d = event.data
            wanted.setdefault((d["customer"], date.fromisoformat(d["period_start"]),
                               date.fromisoformat(d["period_end"])), d)
        codes = sorted({code for code, _, _ in wanted})
        customers = {c.code: c for c in session.scalars(select(Customer).where(Customer.code.in_(codes)))}
        existing = {(c, start, end): number for c, start, end, number in session.execute(
            select(Invoice.customer, Invoice.period_start, Invoice.period_end, Invoice.number)
            .where(Invoice.customer.in_(codes)))}
        runs: list[Run] = []
        for key, d in wanted.items():
            if key in existing:
                log.info("invoice_exists", customer=d["customer"], period=d["period"], invoice=existing[key])
                continue
            customer = customers.get(d["customer"])
            if customer is None:
                raise BadEventError(f"billing run {d['run_id']} names unknown customer {d['customer']!r}")
            runs.append(Run(d["run_id"], customer, Period(key[1], key[2])))
        if runs:
            self._issue(session, runs)
        return iter(())

    def _issue(self, session: Session, runs: list[Run]) -> None:
        """The invoices (``services.invoicer.billing``, in this handler's transaction) and their
        invoice-issued events in the outbox, committed together: an event leaves only if its
        invoice exists, and the relay publishes it after the commit."""
        invoices = issue_invoices(session, runs, settings=self.runtime.settings, store=self.runtime.store)
        topic = topic_name(self.runtime.settings.namespace, Topic.INVOICE_ISSUED)
        for run, invoice in zip(runs, invoices, strict=True):
            if invoice is not None:
                add_to_outbox(session, topic, run.customer.code,
                              invoice_issued(invoice, run_id=run.run_id, source=self.runtime.source))


def check_currencies(session: Session, d: dict, calls: pl.DataFrame) -> None:
    """Refuse (BadEventError: the message's fault, dead-lettered) a batch whose calls' currency is
    not their customer's as this database has it (``customers.currency``), or that names a
    currency for a call matched to no customer: its charges were priced on other terms.

    Set-based and cheap: the batch's distinct (customer, currency) pairs, one query for those
    customers' currencies, one join. A customer the database doesn't have is not judged here."""
    said = calls.select("customer", "currency").unique()
    codes = said["customer"].drop_nulls().to_list()
    held = pl.DataFrame(session.execute(select(Customer.code, Customer.currency).where(Customer.code.in_(codes))).all()
                        if codes else [], schema={"customer": pl.String, "billed_in": pl.String}, orient="row")
    wrong = said.join(held, on="customer", how="left").filter(
        pl.when(pl.col("customer").is_null()).then(pl.col("currency").is_not_null())
        .otherwise(pl.col("billed_in").is_not_null() & pl.col("currency").ne_missing(pl.col("billed_in")))
    ).sort("customer", "currency", nulls_last=True)
    if not wrong.height:
        return
    problems = "; ".join(
        f"a call matched to no customer says {currency}" if customer is None
        else f"customer {customer}'s calls say {currency or 'no currency'}, but {customer} is billed in {billed_in}"
        for customer, currency, billed_in in wrong.iter_rows())
    raise BadEventError(
        f"call-rated batch {d.get('batch')} ({d['part']}) of file {d['file_id']}: {problems}. Its charges are not "
        f"in the customer's currency: check it ('cdrflow customers show'), then 'cdrflow files retry "
        f"{d['file_id']}' to rate the file again")


def ledger_frame(d: dict, calls: pl.DataFrame) -> pl.DataFrame:
    """A call-rated batch's calls as the calls ledger stores them (money in integer micros)."""
    return calls.with_columns(file_id=pl.lit(d["file_id"]), carrier=pl.lit(d["carrier"]),
                              direction=pl.col("direction").fill_null(d["direction"]),
                              answered=pl.col("answered").fill_null(True)).select(list(CALL_COLUMNS))


def build_loop(runtime: Runtime) -> ServiceLoop:
    invoicer = Invoicer(runtime)
    relay = OutboxRelay(runtime.database, runtime.producer)
    s = runtime.settings
    return ServiceLoop(
        service="invoicer", namespace=s.namespace, bootstrap=s.bootstrap, database=runtime.database,
        visibility_timeout=s.visibility_timeout_seconds,
        producer=runtime.producer,
        handlers={Topic.CALL_RATED: invoicer.on_call_rated, Topic.ADMIN_COMMANDS: invoicer.on_admin_command},
        batch_handlers={Topic.RUN_CLOSED: invoicer.on_runs_closed},
        on_idle=relay.publish_pending,
    )
