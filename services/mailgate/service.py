"""The mail gateway service: the SMTP server and the worker that announces spooled messages'
files, in one asyncio loop. On start the worker first finishes whatever was spooled before a
crash."""

from __future__ import annotations

import asyncio
import signal
import ssl

from aiosmtpd.smtp import SMTP

from cdrflow.errors import CdrflowError, ConfigurationError
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from services.mailgate.gateway import Gateway, authenticator, parse_users
from services.mailgate.worker import MailWorker

log = get_logger(__name__)

IDLE_CHECK = 1.0  # seconds between looks at the spool when nothing woke the worker


def tls_context(runtime: Runtime) -> ssl.SSLContext | None:
    s = runtime.settings
    if not s.mailgate_tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(s.mailgate_tls_cert, s.mailgate_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"mail gateway certificate {s.mailgate_tls_cert} / key {s.mailgate_tls_key} "
                                 f"can't be loaded: {exc}") from exc
    return context


def smtp_factory(runtime: Runtime, gateway: Gateway):  # type: ignore[no-untyped-def]
    s = runtime.settings
    users = parse_users(s.mailgate_users)
    context = tls_context(runtime)

    def make() -> SMTP:
        return SMTP(gateway, data_size_limit=s.mailgate_max_message_bytes, enable_SMTPUTF8=True,
                    hostname=s.mail_domain, ident="cdrflow mailgate", tls_context=context,
                    authenticator=authenticator(users) if users else None,
                    auth_exclude_mechanism=None if users else ["LOGIN", "PLAIN"],
                    auth_require_tls=s.mailgate_auth_require_tls and context is not None, timeout=120)

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
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(runtime, stop)

    asyncio.run(main())
