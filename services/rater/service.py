"""Rater service: record-parsed batches → call-rated batches, priced by the rating engine.

Batches are columns (``cdrflow.batches``) in and out; a call-rated batch keeps its
record-parsed batch's key (file and batch), so one file's batches spread over partitions and
invoicer instances as they did over raters.

It writes no calls (the invoicer keeps the calls ledger), so a crash can only repeat work.
The summary of a fixed-fee (SDR) file is the exception: in the handler's transaction its
carrier transactions become billing transactions, matched and priced (``services.rater.fees``;
inserted only if absent, so a repeated summary adds nothing), before the summary goes on.
When reference data changes (a new version in the change log), it reloads its plan,
re-rates the calls waiting in reconciliation that are not yet invoiced, sending them as
``rerate`` batches that the invoicer applies in place, and matches again the fees waiting
in reconciliation, in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby

import polars as pl
from sqlalchemy import select
from sqlalchemy.orm import Session

from cdrflow.bus import Outgoing, ServiceLoop, Topic, topic_name
from cdrflow.batches import cut, from_columns, to_columns
from cdrflow.callrecords import RECORD_SCHEMA
from cdrflow.db.models import Call, File
from cdrflow.errors import NotYetVisibleError
from cdrflow.events import Event, EventType, event_id
from cdrflow.log import get_logger
from cdrflow.money import to_micros
from cdrflow.reference import reference_version
from cdrflow.runtime import Runtime
from services.rater.engine import rate_calls
from services.rater.fees import FeeSheetCache, bill_file, rematch_fees
from services.rater.plan import RatingPlan
from services.rater.reference import load_plan

log = get_logger(__name__)

RECON_STATUSES = ("unmatched", "unrated")


class PlanCache:
    """The compiled plan, rebuilt only when the reference data's version moves."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.version: int | None = None
        self.plan: RatingPlan | None = None

    def current(self, session: Session) -> tuple[int, RatingPlan]:
        version = reference_version(session)
        if self.plan is None or version != self.version:
            self.plan = load_plan(session, self.runtime.store, self.runtime.settings.zone)
            self.version = version
            log.info("rating_plan_loaded", reference_version=version, sheets=len(self.plan.sheets),
                     clis=self.plan.directory.size)
        return version, self.plan


class Rater:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.plans = PlanCache(runtime)
        self.fee_sheets = FeeSheetCache(runtime.store)
        self.rerated_version: int | None = None

    def on_record_parsed(self, event: Event, session: Session) -> Iterator[Outgoing]:
        event.require("file_id", "part", "carrier", "direction")
        d = event.data
        if d["part"] == "summary":
            if not d.get("batches"):  # no call batches: a fixed-fee (SDR) file, whose rows are stored
                self._bill_fees(session, d["file_id"])
            yield self._outgoing(d["file_id"], "summary", d)
            return
        event.require("batch", "records")
        _, plan = self.plans.current(session)
        records = from_columns(d["records"], RECORD_SCHEMA)
        rated = rate_calls(records, plan, carrier=d["carrier"], direction=d["direction"])
        head = {k: d[k] for k in ("file_id", "carrier", "direction", "batch")} | {"part": "batch"}
        key = f"{d['file_id']}/{d['batch']}"
        # A rated call carries more than its record (destination, reason): a batch that would
        # outgrow the broker's limit goes on in pieces, ids "<batch>.<piece>" (the same each time).
        pieces = list(cut(rated, max_rows=max(rated.height, 1))) or [rated]
        for n, calls in enumerate(pieces):
            yield self._outgoing(d["file_id"], d["batch"] if len(pieces) == 1 else f"{d['batch']}.{n}",
                                 head | {"count": calls.height, "calls": to_columns(calls)}, key)

    def _bill_fees(self, session: Session, file_id: str) -> None:
        file = session.get(File, file_id)
        if file is None:
            raise NotYetVisibleError(f"record-parsed summary names file {file_id}, which is not in the database")
        if file.kind != "sdr":
            return
        version, plan = self.plans.current(session)
        bill_file(session, file, plan, self.fee_sheets.current(session, version), self.runtime.settings.zone)

    def _outgoing(self, file_id: str, part: object, data: dict, key: str | None = None) -> Outgoing:
        event = Event(type=EventType.CALL_RATED, source=self.runtime.source, subject=file_id,
                      id=event_id(EventType.CALL_RATED, file_id, part), data=data)
        return Outgoing(Topic.CALL_RATED, key or file_id, event)

    # --- reconciliation --------------------------------------------------------------

    def rerate_reconciliation(self) -> int:
        """Re-rate every call in reconciliation (not invoiced) once per reference version, and
        match again the fees there (written in this transaction). Returns how many calls were
        sent again."""
        with self.runtime.database.transaction() as session:
            version, plan = self.plans.current(session)
            if version == self.rerated_version:
                return 0
            outgoing = list(self.rerate(session, plan, version))
            rematch_fees(session, plan, self.fee_sheets.current(session, version), self.runtime.settings.zone)
        for out in outgoing:
            self.runtime.producer.send(topic_name(self.runtime.settings.namespace, out.topic), out.key, out.event)
        self.runtime.producer.flush()
        self.rerated_version = version
        sent = sum(o.event.data["count"] for o in outgoing)
        if sent:
            log.info("reconciliation_rerated", reference_version=version, calls=sent)
        return sent

    def rerate(self, session: Session, plan: RatingPlan, version: int) -> Iterator[Outgoing]:
        calls = session.scalars(
            select(Call).where(Call.status.in_(RECON_STATUSES), Call.invoice_id.is_(None))
            .order_by(Call.file_id, Call.carrier, Call.direction, Call.row)
        )
        size = self.runtime.settings.batch_size
        for (file_id, carrier, direction), group in groupby(calls, key=lambda c: (c.file_id, c.carrier, c.direction)):
            rows = list(group)
            n = 0
            for start in range(0, len(rows), size):
                chunk = rows[start:start + size]
                records = pl.DataFrame([_record_of(c) for c in chunk], schema=RECORD_SCHEMA)
                rated = rate_calls(records, plan, carrier=carrier, direction=direction)
                for calls in cut(rated, max_rows=size):
                    data = {"file_id": file_id, "carrier": carrier, "direction": direction, "batch": n,
                            "part": "rerate", "reference_version": version, "count": calls.height,
                            "calls": to_columns(calls)}
                    yield self._outgoing(file_id, f"rerate-{version}-{n}", data)
                    n += 1


def _record_of(call: Call) -> dict:
    """A stored call back as a call record, as its file gave it (the carrier's own cost included)."""
    return {"row": call.row, "cli": call.cli, "dialled": call.dialled, "start": call.start, "end": None,
            "duration": call.duration, "answered": call.answered, "charge_code": call.charge_code,
            "cost": None if call.cdr_cost is None else to_micros(call.cdr_cost),
            "account_code": call.account_code, "direction": call.direction}


def build_loop(runtime: Runtime) -> ServiceLoop:
    rater = Rater(runtime)
    s = runtime.settings
    return ServiceLoop(
        service="rater", namespace=s.namespace, bootstrap=s.bootstrap, database=runtime.database,
        visibility_timeout=s.visibility_timeout_seconds,
        producer=runtime.producer, handlers={Topic.RECORD_PARSED: rater.on_record_parsed},
        on_idle=rater.rerate_reconciliation,
    )
