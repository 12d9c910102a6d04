"""What a running service holds: settings, database, file store, producer; built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from cdrflow.bus import EventProducer
from cdrflow.db import Database
from cdrflow.errors import FileStoreError
from cdrflow.filestore import FileStore
from cdrflow.log import get_logger
from cdrflow.settings import Settings

log = get_logger(__name__)


@dataclass
class Runtime:
    settings: Settings
    service: str
    database: Database = field(init=False)
    store: FileStore = field(init=False)

    def __post_init__(self) -> None:
        self.database = Database(self.settings.effective_database_url)
        self.store = FileStore(self.settings.file_store_dir)
        try:  # temp files of writers killed mid-file (kill -9 mid-upload) would stay forever
            if swept := self.store.sweep_temporary():
                log.info("file_store_swept", removed=swept, file_store=str(self.settings.file_store_dir))
        except FileStoreError as exc:
            log.warning("file_store_sweep_failed", error=str(exc))

    @cached_property
    def producer(self) -> EventProducer:
        return EventProducer(self.settings.bootstrap, client_id=f"{self.settings.namespace}.{self.service}")

    @property
    def source(self) -> str:
        """The CloudEvents ``source`` of events this service emits."""
        return f"cdrflow/{self.service}"
