"""Announcing the files of spooled messages: the half of the gateway that runs after 250.

For a batch of pending messages, in this order: read each raw message back from the file store;
extract and plan it again (pure, so the same files); store each file; produce its file-arrived;
flush (acks=all); then mark the messages processed. A crash anywhere before the last step
repeats the batch after restart, and each file comes out with the same file id, derived from
(message, recipient, position in the message), so dedupe sees the same file, not a duplicate.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from sqlalchemy import select

from cdrflow.bus import Topic, topic_name
from cdrflow.db.models import MailMessage
from cdrflow.events import event_id
from cdrflow.intake import file_arrived
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from services.mailgate.addresses import UnknownAddress, parse_address
from services.mailgate.extract import MessageRefused, extract
from services.mailgate.gateway import limits_of, load_carriers
from services.mailgate.plan import plan_arrivals

log = get_logger(__name__)


def mailed_file_id(message_id: str, recipient: str, position: str) -> str:
    return event_id("mailgate", message_id, recipient.lower(), position)


class MailWorker:
    """Announces the files of pending messages (see the module doc for the order of steps)."""

    def __init__(self, runtime: Runtime, batch: int = 100) -> None:
        self.runtime = runtime
        self.batch = batch

    def process_pending(self) -> int:
        """Announce the files of up to ``batch`` pending messages; returns how many messages were done."""
        with self.runtime.database.transaction() as session:
            pending = session.execute(
                select(MailMessage.id, MailMessage.fingerprint, MailMessage.sender, MailMessage.recipients,
                       MailMessage.authenticated_as)
                .where(MailMessage.status == "pending").order_by(MailMessage.received_at, MailMessage.id)
                .limit(self.batch)).all()
        if not pending:
            return 0
        carriers = load_carriers(self.runtime)
        outcomes = {}
        for message_id, fingerprint, sender, recipients, user in pending:
            outcomes[message_id] = self._announce(message_id, fingerprint, sender, orjson.loads(recipients),
                                                  carriers, user)
        self.runtime.producer.flush(timeout=60)
        now = datetime.now(UTC)
        with self.runtime.database.transaction() as session:
            for message_id, (status, outcome) in outcomes.items():
                message = session.get(MailMessage, message_id)
                message.status, message.outcome, message.processed_at = status, orjson.dumps(outcome).decode(), now
        return len(pending)

    def _announce(self, message_id: str, fingerprint: str, sender: str, recipients: list[str],
                  carriers: dict, user: str | None) -> tuple[str, dict]:
        settings = self.runtime.settings
        raw = self.runtime.store.read_bytes(fingerprint)  # FileStoreError: the batch is retried
        try:
            found = extract(raw, limits_of(settings))
            arrivals = plan_arrivals([parse_address(r, settings.mail_domain) for r in recipients], found, carriers,
                                     sender, authenticated=user is not None)
        except (MessageRefused, UnknownAddress) as exc:
            # Settings or carriers changed between the 250 and now (a carrier or its pattern removed,
            # a limit lowered): the message stays in the store and an operator must act.
            reason = exc.reason if isinstance(exc, MessageRefused) else str(exc)
            log.error("mail_not_announced", message_id=message_id, reason=reason)
            return "failed", {"error": reason}
        ignored = [{"name": p.name, "reason": p.reason} for p in found.ignored]
        topic = topic_name(settings.namespace, Topic.FILE_ARRIVED)
        files = []
        for arrival in arrivals:
            stored = self.runtime.store.put_bytes(arrival.file.data)
            details = {"message_id": message_id, "sender": sender, "recipient": arrival.route.address,
                       "position": arrival.file.position, "container": arrival.file.container,
                       "authenticated_as": user}
            event = file_arrived(stored, arrival.meta, self.runtime.source, details,
                                 file_id=mailed_file_id(message_id, arrival.route.address, arrival.file.position))
            self.runtime.producer.send(topic, stored.fingerprint, event)
            files.append({"file_id": event.id, "name": arrival.meta.original_name, "carrier": arrival.meta.carrier,
                          "kind": arrival.meta.kind, "period": arrival.meta.period, "size": stored.size})
            log.info("file_mailed", file_id=event.id, message_id=message_id, fingerprint=stored.fingerprint,
                     carrier=arrival.meta.carrier, original_name=arrival.meta.original_name)
        return "processed", {"files": files, "ignored": ignored}
