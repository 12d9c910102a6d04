"""FTP, FTPS and SFTP servers on 127.0.0.1, each in a thread of the test process."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncssh
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, ThrottledDTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer

logging.getLogger("pyftpdlib").setLevel(logging.WARNING)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for localhost / 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@contextmanager
def ftp_server(root: Path, user: str = "carrier", password: str = "s3cret", *, cert: tuple[Path, Path] | None = None,
               bytes_per_second: int = 0) -> Iterator[int]:
    """A pyftpdlib server over ``root``; FTPS (explicit TLS required) when ``cert`` is given. Yields its port."""
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm="elradfmw")
    base = TLS_FTPHandler if cert else FTPHandler
    # A refused login is answered after a delay, as real servers do against password guessing;
    # pyftpdlib's default (3 s) would equal the collector timeout the tests use.
    attrs: dict[str, object] = {"authorizer": authorizer, "banner": "test carrier ready", "auth_failed_timeout": 1}
    if cert:
        attrs |= {"certfile": str(cert[0]), "keyfile": str(cert[1]), "tls_control_required": True,
                  "tls_data_required": True}
    if bytes_per_second:
        attrs["dtp_handler"] = type("SlowDTP", (ThrottledDTPHandler,), {"write_limit": bytes_per_second})
    handler = type("Handler", (base,), attrs)
    server = FTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.1, "handle_exit": False},
                              daemon=True)
    thread.start()
    try:
        yield server.address[1]
    finally:
        server.close_all()
        thread.join(5)


class _SshServer(asyncssh.SSHServer):
    def __init__(self, user: str, password: str, client_key: asyncssh.SSHKey | None) -> None:
        self.user, self.password, self.client_key = user, password, client_key

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == self.user and password == self.password

    def public_key_auth_supported(self) -> bool:
        return self.client_key is not None

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return (username == self.user and self.client_key is not None
                and key.public_data == self.client_key.public_data)


@contextmanager
def sftp_server(root: Path, host_key: asyncssh.SSHKey | list[asyncssh.SSHKey], user: str = "carrier",
                password: str = "s3cret", client_key: asyncssh.SSHKey | None = None) -> Iterator[int]:
    """An asyncssh SFTP server chrooted to ``root``, in its own thread and event loop, with one host
    key or several (as OpenSSH's sshd holds RSA, ECDSA and Ed25519 keys). Yields its port."""
    host_keys = host_key if isinstance(host_key, list) else [host_key]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=host_keys,
            server_factory=lambda: _SshServer(user, password, client_key),
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(root).encode()), allow_scp=False)

    acceptor = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield acceptor.sockets[0].getsockname()[1]
    finally:
        acceptor.close()
        asyncio.run_coroutine_threadsafe(acceptor.wait_closed(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@contextmanager
def silent_server() -> Iterator[int]:
    """Accepts connections and never says a word: a source that hangs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()
