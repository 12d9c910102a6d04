"""FTP, FTPS (explicit TLS) and SFTP behind one small async interface: list, download, delete.

FTP and FTPS use the standard library's ftplib in a worker thread; SFTP uses asyncssh. Every
third-party error is translated here into the collector's own errors (``errors``), each naming
the source and saying what to check; no message carries a password or key.
"""

from __future__ import annotations

import asyncio
import ftplib
import socket
import ssl
from calendar import timegm
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import asyncssh

from services.collector.credentials import Credentials
from services.collector.errors import (
    CertificateError,
    HostKeyError,
    RemoteFileError,
    RemoteSourceError,
    SourceLoginError,
    SourceTimeoutError,
    SourceUnreachableError,
    TlsMismatchError,
)
from services.collector.rules import RemoteEntry, remote_path

PROTOCOLS = ("ftp", "ftps", "sftp")
DEFAULT_PORTS = {"ftp": 21, "ftps": 21, "sftp": 22}
CHUNK = 1 << 16


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one source (credentials decrypted, held only in memory)."""

    source: str
    protocol: str
    host: str
    port: int
    username: str
    credentials: Credentials
    verify_tls: bool = True
    host_key: str | None = None
    timeout: float = 30.0
    tls_ca: str | None = field(default=None, repr=False)
    """PEM certificate(s) an FTPS server's certificate must chain to, instead of the system's CAs."""


class Remote(Protocol):
    async def list_files(self, directory: str) -> list[RemoteEntry]: ...
    async def download(self, path: str, dest: Path) -> int: ...
    async def delete(self, path: str) -> None: ...
    async def close(self) -> None: ...


async def connect(endpoint: Endpoint) -> Remote:
    """Connected and logged in, or a RemoteSourceError saying why not."""
    if endpoint.protocol == "sftp":
        return await SftpRemote.open(endpoint)
    if endpoint.protocol in ("ftp", "ftps"):
        return await FtpRemote.open(endpoint)
    raise RemoteSourceError(endpoint.source, f"unknown protocol {endpoint.protocol!r} (use {', '.join(PROTOCOLS)})")


# --- FTP / FTPS -------------------------------------------------------------------------


class _FtpTls(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session,
    which many servers (vsftpd's require_ssl_reuse) insist on."""

    def ntransfercmd(self, cmd: str, rest: Any = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                            session=self.sock.session)  # type: ignore[union-attr]
        return conn, size


def _tls_context(verify: bool, ca_pem: str | None = None) -> ssl.SSLContext:
    """Certificate and host name checked against the system's CAs, or only against ``ca_pem``
    (a carrier's own CA); neither when the source opted out (``--no-verify-tls``)."""
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _mdtm_seconds(stamp: str) -> int:
    """``20261001123000`` or ``20261001123000.123`` (UTC, RFC 3659) → seconds since the epoch."""
    return timegm(datetime.strptime(stamp.strip()[:14], "%Y%m%d%H%M%S").timetuple())


TLS_WORDS = ("tls", "ssl", "encrypt", "secure")
"""What servers say when plain FTP is refused for want of TLS (vsftpd: "530 Non-anonymous sessions
must use encryption."; ProFTPD: "550 SSL/TLS required on the control channel"; Pure-FTPd: "…TLS…")."""


def _asks_for_tls(reply: str) -> bool:
    return any(word in reply.lower() for word in TLS_WORDS)


def _start_tls(endpoint: Endpoint, ftp: ftplib.FTP_TLS) -> None:
    """AUTH TLS; a server that refuses it (500/502/504 unknown command, 534, or vsftpd's 530
    without TLS configured) does not offer TLS."""
    try:
        ftp.auth()
    except ftplib.error_perm as exc:
        raise TlsMismatchError(endpoint.source, f"{endpoint.host} does not offer TLS (it answered AUTH TLS with "
                               f"{str(exc)[:120]!r}): check the host and port, or use ftp if the carrier agrees "
                               "to plain FTP") from exc


class FtpRemote:
    def __init__(self, endpoint: Endpoint, ftp: ftplib.FTP) -> None:
        self.endpoint, self._ftp = endpoint, ftp

    @classmethod
    async def open(cls, endpoint: Endpoint) -> FtpRemote:
        def login() -> ftplib.FTP:
            if endpoint.protocol == "ftps":
                ftp: ftplib.FTP = _FtpTls(context=_tls_context(endpoint.verify_tls, endpoint.tls_ca), timeout=endpoint.timeout)
            else:
                ftp = ftplib.FTP(timeout=endpoint.timeout)
            ftp.connect(endpoint.host, endpoint.port)
            try:
                if isinstance(ftp, ftplib.FTP_TLS):
                    _start_tls(endpoint, ftp)  # before USER: a refused AUTH TLS is not a refused login
                try:
                    ftp.login(endpoint.username, endpoint.credentials.password or "")
                except ftplib.error_perm as exc:
                    if endpoint.protocol == "ftp" and _asks_for_tls(str(exc)):
                        raise TlsMismatchError(endpoint.source, f"{endpoint.host} requires TLS ({str(exc)[:120]}): "
                                               "use ftps for this source ('cdrflow sources add --protocol ftps')") from exc
                    raise
                if isinstance(ftp, ftplib.FTP_TLS):
                    ftp.prot_p()
            except BaseException:
                ftp.close()
                raise
            return ftp

        return cls(endpoint, await cls._call(endpoint, login, "log in"))

    @staticmethod
    async def _call(endpoint: Endpoint, fn: Any, doing: str, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except ssl.SSLCertVerificationError as exc:
            raise CertificateError(endpoint.source, f"TLS certificate of {endpoint.host} failed verification "
                                   f"({exc.verify_message}); give the carrier's CA certificate (or its self-signed "
                                   "certificate) with 'cdrflow sources add --ca-file', or turn checking off for this "
                                   "source with --no-verify-tls") from exc
        except ssl.SSLError as exc:
            raise RemoteSourceError(endpoint.source, f"TLS failed while trying to {doing}: {exc.reason}") from exc
        except (TimeoutError, socket.timeout) as exc:
            raise SourceTimeoutError(endpoint.source, f"{endpoint.host}:{endpoint.port} did not answer within "
                                     f"{endpoint.timeout:g}s while trying to {doing}") from exc
        except ftplib.error_perm as exc:
            if str(exc).startswith("530"):
                raise SourceLoginError(endpoint.source, f"login as {endpoint.username!r} refused by "
                                       f"{endpoint.host} ({str(exc)[:120]}): check username and password") from exc
            raise RemoteFileError(endpoint.source, f"server refused to {doing}: {str(exc)[:200]}") from exc
        except ftplib.Error as exc:
            raise RemoteFileError(endpoint.source, f"FTP error while trying to {doing}: {str(exc)[:200]}") from exc
        except (ConnectionError, socket.gaierror, OSError) as exc:
            raise SourceUnreachableError(endpoint.source, f"can't reach {endpoint.host}:{endpoint.port} "
                                         f"({exc.strerror or exc}) while trying to {doing}") from exc

    async def list_files(self, directory: str) -> list[RemoteEntry]:
        return await self._call(self.endpoint, self._list, f"list {directory}", directory)

    def _list(self, directory: str) -> list[RemoteEntry]:
        try:
            return [RemoteEntry(remote_path(directory, name), int(facts["size"]), _mdtm_seconds(facts["modify"]))
                    for name, facts in self._ftp.mlsd(directory, facts=["type", "size", "modify"])
                    if facts.get("type") == "file" and "size" in facts and "modify" in facts]
        except ftplib.error_perm as exc:
            if not str(exc)[:3] in ("500", "501", "502", "504"):
                raise
        # No MLSD on this server: names, then SIZE and MDTM per name (directories fail SIZE).
        entries = []
        for name in self._ftp.nlst(directory):
            path = name if "/" in name else remote_path(directory, name)
            try:
                size = self._ftp.size(path)
                stamp = self._ftp.sendcmd(f"MDTM {path}").split(maxsplit=1)[1]
            except ftplib.error_perm:
                continue
            if size is not None:
                entries.append(RemoteEntry(path, int(size), _mdtm_seconds(stamp)))
        return entries

    async def download(self, path: str, dest: Path) -> int:
        def fetch() -> int:
            with dest.open("wb") as fh:
                self._ftp.retrbinary(f"RETR {path}", fh.write, blocksize=CHUNK)
                return fh.tell()

        return await self._call(self.endpoint, fetch, f"download {path}")

    async def delete(self, path: str) -> None:
        await self._call(self.endpoint, self._ftp.delete, f"delete {path}", path)

    async def close(self) -> None:
        def quit_() -> None:
            try:
                self._ftp.quit()
            except (ftplib.Error, OSError, EOFError):
                self._ftp.close()

        await asyncio.to_thread(quit_)


# --- SFTP -----------------------------------------------------------------------------


def _ssh_error(endpoint: Endpoint, exc: BaseException, doing: str) -> RemoteSourceError:
    where = f"{endpoint.host}:{endpoint.port}"
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return HostKeyError(endpoint.source, f"{where} presented a host key that is not the pinned one: the "
                            "server was re-keyed or is not the carrier's; check with the carrier, then "
                            f"'cdrflow sources trust {endpoint.source}'")
    if isinstance(exc, asyncssh.PermissionDenied):
        return SourceLoginError(endpoint.source, f"login as {endpoint.username!r} refused by {where}: check "
                                f"username and {endpoint.credentials.method}")
    if isinstance(exc, (asyncssh.KeyImportError, asyncssh.KeyEncryptionError)):
        return SourceLoginError(endpoint.source, "the private key can't be read (wrong passphrase or not a "
                                "private key); re-add the source with the right key")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, asyncssh.ConnectionLost)):
        return SourceTimeoutError(endpoint.source, f"{where} did not answer within {endpoint.timeout:g}s "
                                  f"while trying to {doing}")
    if isinstance(exc, asyncssh.SFTPError):
        return RemoteFileError(endpoint.source, f"server refused to {doing}: {exc.reason}")
    if isinstance(exc, asyncssh.Error):
        return RemoteSourceError(endpoint.source, f"SSH error while trying to {doing}: {exc.reason}")
    if isinstance(exc, OSError):
        return SourceUnreachableError(endpoint.source, f"can't reach {where} ({exc.strerror or exc}) while "
                                      f"trying to {doing}")
    return RemoteSourceError(endpoint.source, f"{type(exc).__name__} while trying to {doing}")


_SSH_ERRORS = (asyncssh.Error, asyncssh.KeyImportError, asyncssh.KeyEncryptionError, OSError, asyncio.TimeoutError)


def _no_user_config() -> dict[str, Any]:
    """Only what the source says: no ~/.ssh/config, agent or default keys of whoever runs cdrflow."""
    return {"config": [], "agent_path": None, "ignore_encrypted": True}


class SftpRemote:
    def __init__(self, endpoint: Endpoint, conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient) -> None:
        self.endpoint, self._conn, self._sftp = endpoint, conn, sftp

    @classmethod
    async def open(cls, endpoint: Endpoint) -> SftpRemote:
        if not endpoint.host_key:
            raise HostKeyError(endpoint.source, f"no host key is pinned for {endpoint.host}:{endpoint.port}: run "
                               f"'cdrflow sources trust {endpoint.source}' and compare the fingerprint with the "
                               "carrier's")
        creds = endpoint.credentials
        try:
            pinned = pinned_keys(endpoint.host_key)
            client_keys = ([asyncssh.import_private_key(creds.private_key, creds.passphrase)]
                           if creds.private_key else None)
            conn = await asyncssh.connect(
                endpoint.host, endpoint.port, username=endpoint.username, password=creds.password,
                client_keys=client_keys, known_hosts=(pinned, [], []),
                connect_timeout=endpoint.timeout, login_timeout=endpoint.timeout, **_no_user_config())
        except asyncssh.HostKeyNotVerifiable as exc:
            raise await _not_pinned(endpoint, exc) from exc
        except _SSH_ERRORS as exc:
            raise _ssh_error(endpoint, exc, "log in") from exc
        try:
            sftp = await asyncio.wait_for(conn.start_sftp_client(), endpoint.timeout)
        except _SSH_ERRORS as exc:
            conn.close()
            raise _ssh_error(endpoint, exc, "start SFTP") from exc
        return cls(endpoint, conn, sftp)

    async def _guard(self, coro: Any, doing: str) -> Any:
        try:
            return await asyncio.wait_for(coro, self.endpoint.timeout)
        except _SSH_ERRORS as exc:
            raise _ssh_error(self.endpoint, exc, doing) from exc

    async def list_files(self, directory: str) -> list[RemoteEntry]:
        names = await self._guard(self._sftp.readdir(directory), f"list {directory}")
        return [RemoteEntry(remote_path(directory, n.filename), int(n.attrs.size or 0), int(n.attrs.mtime or 0))
                for n in names
                if n.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR and n.attrs.size is not None]

    async def download(self, path: str, dest: Path) -> int:
        """Chunk by chunk, each read under the timeout (a whole large file may take longer)."""
        remote = await self._guard(self._sftp.open(path, "rb"), f"open {path}")
        written = 0
        try:
            with dest.open("wb") as fh:
                while chunk := await self._guard(remote.read(CHUNK), f"download {path}"):
                    fh.write(chunk)
                    written += len(chunk)
        finally:
            try:
                await asyncio.wait_for(remote.close(), self.endpoint.timeout)
            except _SSH_ERRORS:
                pass
        return written

    async def delete(self, path: str) -> None:
        await self._guard(self._sftp.remove(path), f"delete {path}")

    async def close(self) -> None:
        self._sftp.exit()
        self._conn.close()
        try:
            await asyncio.wait_for(self._conn.wait_closed(), 5)
        except (asyncio.TimeoutError, OSError):
            pass


HOST_KEY_ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                       "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa", "ssh-ed448")
"""Host key algorithms in ``ssh``'s order of preference (OpenSSH's sshd holds RSA, ECDSA and
Ed25519 keys): each connection offers those not yet seen, so the server shows its next key."""
RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")
NO_MORE_KEYS_S = 5.0
"""After a first key, how long a server may take to answer an offer of only the key types it has
not shown: one with none of them either refuses it or, as some do, never answers."""


def pinned_keys(text: str) -> list[asyncssh.SSHKey]:
    """The source's pinned host keys: one OpenSSH public key per line; any of them identifies the server."""
    return [asyncssh.import_public_key(line) for line in text.splitlines() if line.strip()]


async def fetch_host_keys(source: str, host: str, port: int, timeout: float) -> list[asyncssh.SSHKey]:
    """Every host key the server presents now, one per key type it has (for ``cdrflow sources
    trust``, which shows each fingerprint); Ed25519 first, as ``ssh`` shows it by default."""
    endpoint = Endpoint(source, "sftp", host, port, "", Credentials(), timeout=timeout)
    keys: list[asyncssh.SSHKey] = []
    offered = list(HOST_KEY_ALGORITHMS)
    while offered:
        wait = min(timeout, NO_MORE_KEYS_S) if keys else timeout
        try:
            key = await asyncio.wait_for(asyncssh.get_server_host_key(
                host, port, server_host_key_algs=offered, config=[]), wait)
        except _SSH_ERRORS as exc:
            # No key of the types still offered. OpenSSH's sshd says so and closes at once, which
            # the client may see as a reset connection rather than the disconnect message.
            if keys and isinstance(exc, (asyncssh.KeyExchangeFailed, asyncssh.ConnectionLost, asyncssh.DisconnectError,
                                         ConnectionError, asyncio.TimeoutError)):
                break
            raise _ssh_error(endpoint, exc, "fetch the host keys") from exc
        if key is None:
            break
        keys.append(key)
        seen = RSA_ALGORITHMS if key.get_algorithm() in RSA_ALGORITHMS else (key.get_algorithm(),)
        offered = [a for a in offered if a not in seen]
    if not keys:
        raise HostKeyError(source, f"{host}:{port} presented no host key")
    return keys


def describe_keys(keys: list[asyncssh.SSHKey]) -> str:
    return ", ".join(f"{key.get_algorithm()} {key.get_fingerprint('sha256')}" for key in keys)


async def _not_pinned(endpoint: Endpoint, exc: asyncssh.HostKeyNotVerifiable) -> HostKeyError:
    """The mismatch, naming the keys the server presents now, so the operator can compare them with
    the carrier's fingerprint."""
    try:
        keys = await fetch_host_keys(endpoint.source, endpoint.host, endpoint.port, endpoint.timeout)
        presented = f" (it presents {describe_keys(keys)})"
    except RemoteSourceError:
        presented = ""
    return HostKeyError(endpoint.source, f"{endpoint.host}:{endpoint.port} presented a host key that is not the "
                        f"pinned one{presented}: the server was re-keyed or is not the carrier's; check with the "
                        f"carrier, then 'cdrflow sources trust {endpoint.source}'")
