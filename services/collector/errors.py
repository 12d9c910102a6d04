"""What can go wrong reaching a carrier's server, one type per thing the operator must do about it.

Third-party errors (ftplib, ssl, asyncssh, socket) are translated into these in ``remote``; the
message names the source and never carries a password or key.
"""

from __future__ import annotations

from cdrflow.errors import ConfigurationError, InfrastructureError


class RemoteSourceError(InfrastructureError):
    """A carrier's server could not be polled; the source is retried with backoff."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"source {source}: {message}")


class SourceUnreachableError(RemoteSourceError):
    """The server did not accept a connection (wrong host or port, down, firewalled)."""


class SourceTimeoutError(RemoteSourceError):
    """The server stopped answering within the collector timeout."""


class SourceLoginError(RemoteSourceError):
    """The server refused the username, password or key."""


class TlsMismatchError(RemoteSourceError):
    """The source's protocol and the server disagree about TLS: an ``ftps`` source whose server
    does not offer it, or an ``ftp`` source whose server requires it."""


class HostKeyError(RemoteSourceError):
    """An SFTP server presented a host key other than the pinned one (or none is pinned yet)."""


class CertificateError(RemoteSourceError):
    """An FTPS server's TLS certificate failed verification."""


class RemoteFileError(RemoteSourceError):
    """A listing, download or delete failed on the server, or a download came short."""


class FileChangedError(RemoteFileError):
    """A remote file grew while it was downloaded: it is still being written, so it waits."""


class SecretKeyError(ConfigurationError):
    """Source credentials can't be encrypted or decrypted with the configured secret key."""
