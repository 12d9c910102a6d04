"""carrier formats: carrier transactions from SDR (fixed-fee) files; custom format definitions;
each carrier's format and options per kind of file

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "carrier_transactions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("file_id", sa.String(length=36), sa.ForeignKey("files.id"), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("carrier", sa.String(length=64), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("event_type", sa.String(length=32), nullable=True),
        sa.Column("period_start", sa.Date(), nullable=True),
        sa.Column("period_end", sa.Date(), nullable=True),
        sa.Column("effective_date", sa.Date(), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("pro_rata", sa.Boolean(), nullable=False),
        sa.Column("account_code", sa.String(length=64), nullable=True),
        sa.UniqueConstraint("file_id", "row", name="uq_carrier_transactions_file_row"),
    )
    op.create_index("ix_carrier_transactions_file_id", "carrier_transactions", ["file_id"])

    op.create_table(
        "format_definitions",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "carrier_formats",
        sa.Column("carrier", sa.String(length=64), sa.ForeignKey("carriers.code"), primary_key=True),
        sa.Column("kind", sa.String(length=8), primary_key=True),
        sa.Column("format", sa.String(length=64), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=True),
        sa.Column("max_reject_share", sa.Float(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("carrier_formats")
    op.drop_table("format_definitions")
    op.drop_index("ix_carrier_transactions_file_id", table_name="carrier_transactions")
    op.drop_table("carrier_transactions")
