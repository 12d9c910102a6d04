"""A fresh, migrated database for one benchmark run, and gone afterwards: SQLite in the run's data
directory, or ``CREATE DATABASE <prefix>_<random>`` on a PostgreSQL server (dropped at the end)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from cdrflow.db import migrate


def driver_dsn(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def fresh_database(server_url: str | None, data_dir: Path, prefix: str) -> Iterator[str]:
    if server_url is None:
        url = f"sqlite:///{(data_dir / 'cdrflow.db').resolve()}"
        migrate(url)
        yield url
        return
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(driver_dsn(server_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        migrate(url)
        yield url
    finally:
        with psycopg.connect(driver_dsn(server_url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
