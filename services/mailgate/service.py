"""The mail gateway service: the SMTP server and the worker that announces spooled messages'
files, in one asyncio loop. On start the worker first finishes whatever was spooled before a
crash."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP

from cdrflow.errors import CdrflowError, ConfigurationError
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from cdrflow.stopping import exit_if_not_stopped_in
from services.mailgate.gateway import Gateway, authenticator, parse_users
from services.mailgate.worker import MailWorker

log = get_logger(__name__)

IDLE_CHECK = 1.0  # seconds between looks at the spool when nothing woke the worker
SESSION_TIMEOUT = 120  # seconds an SMTP client may stay silent
THREADS = 16  # message checks and spooling run in threads; the worker takes one


def tls_context(runtime: Runtime) -> ssl.SSLContext | None:
    s = runtime.settings
    if not s.mailgate_tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(s.mailgate_tls_cert, s.mailgate_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"mail gateway certificate {s.mailgate_tls_cert} / key {s.mailgate_tls_key} "
                                 f"can't be loaded: {exc}: fix CDRFLOW_MAILGATE_TLS_CERT / _KEY") from exc
    return context


class MailgateSMTP(SMTP):
    """aiosmtpd's SMTP with size refusals that tell the sender the limit and what to do."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = self.data_size_limit
        self._too_big = (f"552 5.3.4 message larger than this gateway's limit of {limit} bytes: refused; "
                         "send the files in several messages, or zip them")

    async def push(self, status: AnyStr) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if text.startswith(("552 Error: Too much mail data", "552 Error: message size exceeds")):
            log.info("mail_refused", peer=self.session.peer if self.session else None, reason="too big")
            status = self._too_big  # type: ignore[assignment]
        await super().push(status)


def smtp_factory(runtime: Runtime, gateway: Gateway) -> Callable[[], SMTP]:
    """One SMTP protocol per connection. AUTH is offered only over TLS unless the operator turned
    that off, and is refused at start-up when it could only run in the clear."""
    s = runtime.settings
    users = parse_users(s.mailgate_users)
    context = tls_context(runtime)
    if users and context is None and s.mailgate_auth_require_tls:
        raise ConfigurationError("CDRFLOW_MAILGATE_USERS is set but the gateway has no certificate, so AUTH "
                                 "would never be offered: set CDRFLOW_MAILGATE_TLS_CERT and _KEY, or "
                                 "CDRFLOW_MAILGATE_AUTH_REQUIRE_TLS=false on a trusted network")

    def make() -> SMTP:
        return MailgateSMTP(gateway, data_size_limit=s.mailgate_max_message_bytes, enable_SMTPUTF8=True,
                            hostname=s.mail_domain, ident="cdrflow mailgate", tls_context=context,
                            authenticator=authenticator(users) if users else None,
                            auth_exclude_mechanism=None if users else ["LOGIN", "PLAIN"],
                            auth_require_tls=s.mailgate_auth_require_tls or not users, timeout=SESSION_TIMEOUT)

    return make


async def run(runtime: Runtime, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    s = runtime.settings
    wake = asyncio.Event()
    gateway = Gateway(runtime, wake.set)
    server = await asyncio.get_running_loop().create_server(smtp_factory(runtime, gateway), s.mailgate_host,
                                                            s.mailgate_port)
    worker = MailWorker(runtime)
    log.info("mailgate_started", host=s.mailgate_host, port=s.mailgate_port, domain=s.mail_domain)
    if ready is not None:
        ready.set()
    try:
        while not stop.is_set():
            try:
                done = await asyncio.to_thread(worker.process_pending)
            except CdrflowError as exc:  # broker or database away: the spool waits, nothing is lost
                log.error("mailgate_worker_retrying", error=str(exc))
                done = 0
            except Exception:  # a bug in the worker: keep taking mail (it is spooled) and retry
                log.exception("mailgate_worker_crashed")
                done = 0
            if done:
                continue
            wake.clear()
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=IDLE_CHECK, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
    finally:
        server.close()
        await server.wait_closed()
        log.info("mailgate_stopped")


def serve(runtime: Runtime) -> None:
    """Run until SIGTERM or Ctrl-C. aiosmtpd's own log is kept to warnings: at debug level it
    would write AUTH exchanges (credentials) and whole message lines."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="mailgate"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: (exit_if_not_stopped_in(), stop.set()))
        await run(runtime, stop)

    asyncio.run(main())
