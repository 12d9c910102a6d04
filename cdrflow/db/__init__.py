"""Database: SQLAlchemy 2 models, Alembic migrations, engine and sessions."""

from cdrflow.db.session import Database, migrate

__all__ = ["Database", "migrate"]
