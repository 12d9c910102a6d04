"""throughput: a file's batches are stored in any order by any invoicer; the file counts its
stored calls up to the records its summary announced

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("calls_expected", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("calls_stored", sa.Integer(), nullable=False, server_default="0"))
    # Files stored before: what they hold is what was expected of them.
    op.execute("UPDATE files SET calls_stored = (SELECT count(*) FROM calls WHERE calls.file_id = files.id)")
    op.execute("UPDATE files SET calls_expected = calls_stored WHERE status = 'rated'")


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("calls_stored")
        batch_op.drop_column("calls_expected")
