"""collection: sources, collected files, mail messages; carrier file-name pattern and mail senders

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("carriers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("file_name_pattern", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("mail_senders", sa.Text(), nullable=True))

    op.create_table(
        "sources",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("carrier", sa.String(length=64), nullable=False),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=200), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=True),
        sa.Column("remote_dir", sa.String(length=500), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("poll_interval", sa.Integer(), nullable=False),
        sa.Column("delete_after_collect", sa.Boolean(), nullable=False),
        sa.Column("verify_tls", sa.Boolean(), nullable=False),
        sa.Column("host_key", sa.Text(), nullable=True),
        sa.Column("tls_ca", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("collected", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["carrier"], ["carriers.code"]),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "collected_files",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["source"], ["sources.name"]),
        sa.PrimaryKeyConstraint("source", "path"),
    )
    op.create_table(
        "mail_messages",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column("authenticated_as", sa.String(length=200), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("mail_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mail_messages_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("mail_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mail_messages_status"))
    op.drop_table("mail_messages")
    op.drop_table("collected_files")
    op.drop_table("sources")
    with op.batch_alter_table("carriers", schema=None) as batch_op:
        batch_op.drop_column("mail_senders")
        batch_op.drop_column("file_name_pattern")
