"""Alembic environment: runs on the connection cdrflow hands in (see cdrflow.db.session.migrate)."""

from alembic import context

from cdrflow.db.models import Base

connection = context.config.attributes.get("connection")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection is not None and connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
