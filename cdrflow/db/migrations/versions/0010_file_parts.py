"""throughput: a large file is parsed in parts by any parser instance; each part's counts are kept
until the file's last part sends the summary

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "file_parts",
        sa.Column("file_id", sa.String(36), sa.ForeignKey("files.id"), primary_key=True),
        sa.Column("part", sa.Integer(), primary_key=True),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("parsed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("cdrflow migrations go forward only")
