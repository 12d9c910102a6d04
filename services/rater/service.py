"""Rater service: record-parsed batches → call-rated batches. Stateless: it reads reference
data and writes nothing, so a crash can only repeat work, never half-do it."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdrflow.bus import Outgoing, ServiceLoop, Topic
from cdrflow.db.models import Customer, CustomerCli
from cdrflow.events import Event, EventType, event_id
from cdrflow.runtime import Runtime
from services.rater.flat import CustomerRate, rate_call
from cdrflow.numbers import normalise_number


class Rater:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def on_record_parsed(self, event: Event, session: Session) -> Iterator[Outgoing]:
        event.require("file_id", "part", "direction")
        d = event.data
        if d["part"] == "summary":
            yield self._outgoing(d["file_id"], "summary", d)
            return
        event.require("batch", "records")
        inbound = d["direction"] == "inbound"
        keys = [normalise_number(r["dialled"] if inbound else r["cli"]) for r in d["records"]]
        rates = self._rates_for(session, set(keys))
        calls = [
            rate_call(r["row"], r["duration"], key, rates.get(key)).to_event(r | {"cli": normalise_number(r["cli"]),
                                                                                 "dialled": normalise_number(r["dialled"])})
            for r, key in zip(d["records"], keys, strict=True)
        ]
        data = {k: d[k] for k in ("file_id", "carrier", "direction", "batch")} | {"part": "batch", "calls": calls}
        yield self._outgoing(d["file_id"], d["batch"], data)

    def _rates_for(self, session: Session, clis: set[str]) -> dict[str, CustomerRate]:
        rows = session.execute(
            select(CustomerCli.cli, Customer.code, Customer.per_minute_rate)
            .join(Customer, Customer.code == CustomerCli.customer_code)
            .where(CustomerCli.cli.in_(clis))
        )
        return {cli: CustomerRate(code, rate) for cli, code, rate in rows}

    def _outgoing(self, file_id: str, part: object, data: dict) -> Outgoing:
        event = Event(type=EventType.CALL_RATED, source=self.runtime.source, subject=file_id,
                      id=event_id(EventType.CALL_RATED, file_id, part), data=data)
        return Outgoing(Topic.CALL_RATED, file_id, event)


def build_loop(runtime: Runtime) -> ServiceLoop:
    rater = Rater(runtime)
    s = runtime.settings
    return ServiceLoop(
        service="rater", namespace=s.namespace, bootstrap=s.bootstrap, database=runtime.database,
        producer=runtime.producer, handlers={Topic.RECORD_PARSED: rater.on_record_parsed},
    )
