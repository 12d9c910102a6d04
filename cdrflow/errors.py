"""One exception hierarchy for cdrflow.

Every error a caller may catch is a ``CdrflowError``. Families: input (a file,
row or reference data an operator sent us is wrong), configuration (settings
are wrong), infrastructure (broker, database, remote peer unavailable).
Third-party exceptions are translated at the boundary into these types.

A rejected CSV row is *data* (a reject record), never an exception.
"""

from __future__ import annotations


class CdrflowError(Exception):
    """Base class of every error cdrflow raises on purpose."""


# --- input -----------------------------------------------------------------


class InputError(CdrflowError):
    """Something an operator or carrier sent us is unusable as it stands."""


class BadFileError(InputError):
    """A whole file can't be accepted (empty, unreadable, wrong encoding)."""

    def __init__(self, message: str, *, file: str | None = None) -> None:
        self.file = file
        super().__init__(f"{file}: {message}" if file else message)


class UnknownCarrierError(InputError):
    """A file names a carrier that is not configured."""

    def __init__(self, carrier: str) -> None:
        self.carrier = carrier
        super().__init__(
            f"unknown carrier {carrier!r}: add it with 'cdrflow carriers add' or check the spelling"
        )


class BadEventError(InputError):
    """A message on the bus is not a valid cdrflow event (goes to the dead-letter topic)."""


class EventRefusedError(InputError):
    """The broker refuses one event for what it is (too large, invalid), not for its own state:
    sending it again can never succeed, so the message that caused it is dead-lettered."""


# --- configuration -----------------------------------------------------------


class ConfigurationError(CdrflowError):
    """Settings or the local installation are wrong; the operator must fix them."""


# --- infrastructure ------------------------------------------------------------


class InfrastructureError(CdrflowError):
    """A dependency (broker, database, remote source) failed; retrying may succeed."""


class BrokerError(InfrastructureError):
    """The Kafka broker could not be reached, started or written to."""


class DatabaseError(InfrastructureError):
    """The database could not be reached or a transaction failed to commit."""


class FileStoreError(InfrastructureError):
    """The content-addressed file store could not write or read a file."""


class NotYetVisibleError(InfrastructureError):
    """An event names state this service can't see (yet): retried for a bounded time, then
    dead-lettered with this reason, so a stage never waits forever on something that isn't there."""
