"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it is sent: the relay invoices are
mailed through in the tests."""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager

from aiosmtpd.controller import Controller

from cdrflow.localkafka import free_port


class Inbox:
    """aiosmtpd handler: keeps every message it accepts; while ``refusal`` is set, answers DATA with
    it; while ``stalling``, keeps a message but holds its answer back (up to a minute)."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.refusal: str | None = None
        self.refused = 0
        self.stalling = False

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001
        if self.refusal:
            self.refused += 1
            return self.refusal
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        for _ in range(600):
            if not self.stalling:
                break
            await asyncio.sleep(0.1)
        return "250 2.0.0 queued"


@contextmanager
def smtp_relay() -> Iterator[tuple[Inbox, int]]:
    """A plain SMTP relay on 127.0.0.1: (its inbox, its port); stopped afterwards."""
    handler, port = Inbox(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()
