"""What every group of CLI commands shares. Imports stay inside the functions so that
``cdrflow --help`` does not pay for SQLAlchemy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdrflow.settings import Settings

if TYPE_CHECKING:
    from cdrflow.db import Database


def open_database(settings: Settings) -> Database:
    """The configured database (SQLite in the data directory unless a URL is set)."""
    from cdrflow.db import Database

    return Database(settings.effective_database_url)
