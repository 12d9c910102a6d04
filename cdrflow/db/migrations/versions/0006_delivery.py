"""delivery guarantee: dead letters operators can list and replay; each outbox entry names
the service whose relay publishes it

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("publisher", sa.String(length=32), nullable=False, server_default="invoicer"))
        batch_op.create_index("ix_outbox_publisher_pending", ["publisher", "published_at"], unique=False)
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("event_id", sa.String(length=200), nullable=True),
        sa.Column("event_type", sa.String(length=200), nullable=True),
        sa.Column("file_id", sa.String(length=36), nullable=True),
        sa.Column("file_status", sa.String(length=16), nullable=True),
        sa.Column("error_type", sa.String(length=100), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replayed_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("service", "topic", "partition", "offset", name="uq_dead_letters_where"),
    )
    op.create_index("ix_dead_letters_service", "dead_letters", ["service"], unique=False)
    op.create_index("ix_dead_letters_file_id", "dead_letters", ["file_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_dead_letters_file_id", table_name="dead_letters")
    op.drop_index("ix_dead_letters_service", table_name="dead_letters")
    op.drop_table("dead_letters")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_publisher_pending")
        batch_op.drop_column("publisher")
