"""duplicates: content fingerprint, first-file claims, operator decisions, carrier rule "same name";
overlapping calls: usage-key claims, calls set aside, each file's overlap policy

Existing files get their stored fingerprint as content fingerprint (exact for files received
uncompressed), and the oldest file of each fingerprint and of each carrier/name claims it.

Revision ID: 0005
Revises: 0004
"""

from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_OLDEST = """NOT EXISTS (SELECT 1 FROM files e WHERE {same}
              AND (e.received_at < f.received_at OR (e.received_at = f.received_at AND e.id < f.id)))"""


def upgrade() -> None:
    with op.batch_alter_table("carriers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hold_same_name", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_fingerprint", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hold_reason", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("overlap_policy", sa.String(length=8), nullable=False, server_default="skip"))
        batch_op.add_column(sa.Column("overlapping_calls", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("overlaps", sa.Text(), nullable=True))
        batch_op.create_index("ix_files_content_fingerprint", ["content_fingerprint"], unique=False)
        batch_op.create_index("ix_files_carrier_name", ["carrier", "original_name"], unique=False)
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("overlaps_file_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("set_aside", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "call_usage_claims",
        sa.Column("usage_start", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("usage_hash", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("usage_start", "usage_hash"),
        sqlite_with_rowid=False,
    )
    op.execute("UPDATE files SET content_fingerprint = fingerprint")
    op.execute("UPDATE files SET hold_reason = 'duplicate' WHERE status = 'held'")

    op.create_table(
        "fingerprint_claims",
        sa.Column("content_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"]),
        sa.PrimaryKeyConstraint("content_fingerprint"),
    )
    op.create_table(
        "file_name_claims",
        sa.Column("carrier", sa.String(length=64), nullable=False),
        sa.Column("original_name", sa.String(length=500), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"]),
        sa.PrimaryKeyConstraint("carrier", "original_name"),
    )
    op.create_table(
        "file_decisions",
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("command", sa.String(length=16), nullable=False),
        sa.Column("operator", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("command_id", sa.String(length=36), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"]),
        sa.PrimaryKeyConstraint("file_id"),
    )
    _claim_stored_calls()
    op.execute("INSERT INTO fingerprint_claims (content_fingerprint, file_id) SELECT f.content_fingerprint, f.id "
               "FROM files f WHERE " + _OLDEST.format(same="e.content_fingerprint = f.content_fingerprint"))
    op.execute("INSERT INTO file_name_claims (carrier, original_name, file_id) SELECT f.carrier, f.original_name, f.id "
               "FROM files f WHERE " + _OLDEST.format(same="e.carrier = f.carrier AND e.original_name = f.original_name"))


def _claim_stored_calls() -> None:
    """Each stored call claims its usage key, oldest file first, so usage re-sent after the upgrade
    is found overlapping. The key is computed by the invoicer's own function (it must match)."""
    from datetime import UTC

    from services.invoicer.overlap import usage_key

    calls = sa.table("calls", sa.column("file_id"), sa.column("row"), sa.column("carrier"), sa.column("cli"),
                     sa.column("dialled"), sa.column("start"), sa.column("duration"))
    files = sa.table("files", sa.column("id"), sa.column("received_at"))
    claims = sa.table("call_usage_claims", sa.column("usage_start"), sa.column("usage_hash"), sa.column("file_id"),
                      sa.column("row"))
    connection = op.get_bind()
    insert = (postgresql if connection.dialect.name == "postgresql" else sqlite).insert(claims) \
        .on_conflict_do_nothing(index_elements=["usage_start", "usage_hash"])
    result = connection.execute(
        sa.select(calls).join(files, files.c.id == calls.c.file_id)
        .order_by(files.c.received_at, calls.c.file_id, calls.c.row),
        execution_options={"stream_results": True})
    while batch := result.fetchmany(10_000):
        rows = []
        for c in batch:
            start = c.start if isinstance(c.start, datetime) else datetime.fromisoformat(str(c.start))
            second, digest = usage_key(c.carrier, c.cli, c.dialled,
                                       start if start.tzinfo else start.replace(tzinfo=UTC), c.duration)
            rows.append({"usage_start": second, "usage_hash": digest, "file_id": c.file_id, "row": c.row})
        connection.execute(insert, rows)


def downgrade() -> None:
    op.drop_table("call_usage_claims")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("set_aside")
        batch_op.drop_column("overlaps_file_id")
    op.drop_table("file_decisions")
    op.drop_table("file_name_claims")
    op.drop_table("fingerprint_claims")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index("ix_files_carrier_name")
        batch_op.drop_index("ix_files_content_fingerprint")
        batch_op.drop_column("overlaps")
        batch_op.drop_column("overlapping_calls")
        batch_op.drop_column("overlap_policy")
        batch_op.drop_column("hold_reason")
        batch_op.drop_column("content_fingerprint")
    with op.batch_alter_table("carriers", schema=None) as batch_op:
        batch_op.drop_column("hold_same_name")
