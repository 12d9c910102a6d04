"""The one settings object, read from the environment once at start-up and passed in.

Nothing else in cdrflow reads ``os.environ`` (the local-broker installer's
``CDRFLOW_KAFKA_LIBS`` cache location being the documented exception).
Every field can be set as ``CDRFLOW_<FIELD>``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cdrflow.errors import ConfigurationError


class Settings(BaseSettings):
    """Where cdrflow keeps its data and how it reaches the broker and database."""

    model_config = SettingsConfigDict(env_prefix="CDRFLOW_", frozen=True, extra="ignore")

    data_dir: Path = Path("var")
    """Home of the embedded defaults: SQLite file, file store, local broker."""

    database_url: str | None = None
    """SQLAlchemy URL; empty means SQLite at ``<data_dir>/cdrflow.db``."""

    kafka_bootstrap: str | None = None
    """An existing Kafka cluster; empty means the project's own local broker."""

    kafka_port: int = 9092
    """Client port of the local broker (only used when kafka_bootstrap is empty)."""

    namespace: str = "cdrflow"
    """Prefix of every topic and consumer group, so several pipelines share a cluster."""

    admin_host: str = "127.0.0.1"
    admin_port: int = 8640

    timezone: str = "Europe/London"
    """The operator's time zone: billing periods and naive CDR times are read in it."""

    batch_size: int = 10_000
    """Most records per record-parsed / call-rated message (fewer when a batch passes about 4 MB):
    large batches keep the per-message costs (a transaction, a plan check) small per call."""

    parse_part_bytes: int = 8 * 1024 * 1024
    """A plain (uncompressed) file larger than this is cut into parts of about this size at line
    ends, each parsed by whichever parser instance takes it (docs/operations.md, "Scaling out")."""

    log_level: str = "INFO"

    visibility_timeout_seconds: float = 60.0
    """How long a service retries an event naming state it can't see before dead-lettering it."""

    stuck_after_minutes: float = 15.0
    """A file accepted or parsed and unchanged for this long is shown ``stuck`` with where it stopped."""

    # --- collection (docs/collection.md) ---
    secret_key: str | None = Field(default=None, repr=False)
    """Fernet key that encrypts source passwords and private keys at rest (``cdrflow sources keygen``)."""

    collector_timeout: float = 30.0
    """Seconds allowed for a remote source to connect, log in or answer one request."""

    collector_settle_seconds: float = 2.0
    """A new or changed remote file is listed twice this far apart; if its size or mtime moved, it waits."""

    collector_max_backoff: int = 3600
    """Longest wait, in seconds, between retries of a failing source."""

    mail_domain: str = "localhost"
    """The domain of the mail gateway's addresses: cdrs@, <carrier>.cdrs@, <carrier>.daily@, …"""

    mailgate_host: str = "127.0.0.1"
    mailgate_port: int = 8025

    mailgate_max_message_bytes: int = 50_000_000
    """Largest message accepted (advertised with SIZE)."""

    mailgate_max_attachments: int = 100
    """Most billing files one message may carry (after unpacking zip/gz and forwarded messages)."""

    mailgate_max_unpacked_bytes: int = 500_000_000
    """Most bytes one message's attachments may unpack to (a zip bomb is refused)."""

    mailgate_tls_cert: Path | None = None
    mailgate_tls_key: Path | None = None
    """Certificate and key: when set, the gateway offers STARTTLS."""

    mailgate_users: str | None = Field(default=None, repr=False)
    """``user:password`` pairs separated by spaces: operators who may AUTH (and then skip sender allow-lists)."""

    mailgate_auth_require_tls: bool = True
    """AUTH only after STARTTLS (turn off only on a trusted network)."""

    # --- billing runs (docs/billing-schedules.md, "Billing runs and the scheduler") ---
    billing_grace_hours: float = Field(default=24.0, ge=0)
    """How long after a period's end the scheduler waits for late files before closing its run."""

    scheduler_interval_seconds: float = Field(default=60.0, gt=0)
    """Seconds between the scheduler's looks for periods to close."""

    # --- email delivery of invoices (docs/billing.md, "Email delivery") ---
    smtp_host: str | None = None
    """The SMTP relay invoices are mailed through; empty means delivery is off (deliveries stay queued)."""

    smtp_port: int = 587
    smtp_starttls: bool = True
    """Upgrade the relay connection with STARTTLS before logging in or sending (refused if the relay can't)."""

    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    """Login at the relay, when both are set (only ever over STARTTLS unless smtp_starttls is off)."""

    mail_from: str = "billing@localhost"
    """The From address of invoice emails; its domain is also that of each email's Message-ID."""

    delivery_max_attempts: int = Field(default=8, ge=1)
    """Tries of one delivery before it stays failed for the operator."""

    delivery_backoff_seconds: float = Field(default=60.0, gt=0)
    """Wait after a delivery's first failed try; it doubles after each further one."""

    # --- invoices (docs/billing.md, "Invoices") ---
    seller_name: str = ""
    """The reseller's legal name, printed on every invoice and credit note (required to render one)."""

    seller_address: str = ""
    """The reseller's postal address as invoices print it: lines separated by "|" or newlines."""

    seller_vat_number: str = ""
    """The reseller's VAT registration number (e.g. GB123456789), printed on every invoice."""

    seller_email: str = ""
    """Where customers write about an invoice, printed on it."""

    invoice_prefix: str = "INV-"
    """Invoice numbers are this prefix and six digits from the gap-free ``invoice`` sequence: INV-000001."""

    credit_note_prefix: str = "CN-"
    """Credit note numbers: this prefix and six digits from the gap-free ``credit-note`` sequence."""

    invoice_empty_runs: bool = False
    """Issue an invoice (of no lines, 0.00) even when a billing run finds nothing to bill."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/London)") from exc
        return value

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'cdrflow.db').resolve()}"

    @property
    def file_store_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def local_kafka_home(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def uses_local_broker(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_host}:{self.admin_port}"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (plus explicit overrides), translating errors."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigurationError(f"invalid cdrflow settings: {exc}") from exc
