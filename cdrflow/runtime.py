"""What a running service holds: settings, database, file store, producer; built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from cdrflow.bus import EventProducer
from cdrflow.db import Database
from cdrflow.filestore import FileStore
from cdrflow.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    service: str
    database: Database = field(init=False)
    store: FileStore = field(init=False)

    def __post_init__(self) -> None:
        self.database = Database(self.settings.effective_database_url)
        self.store = FileStore(self.settings.file_store_dir)

    @cached_property
    def producer(self) -> EventProducer:
        return EventProducer(self.settings.bootstrap, client_id=f"{self.settings.namespace}.{self.service}")

    @property
    def source(self) -> str:
        """The CloudEvents ``source`` of events this service emits."""
        return f"cdrflow/{self.service}"
