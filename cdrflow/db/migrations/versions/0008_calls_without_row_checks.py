"""throughput: calls name their file and invoice without a foreign key checked per row, and
without the index on file_id alone (the (file_id, row) key leads with it)

PostgreSQL checks a foreign key with a query per inserted row: storing a million calls took
14.2 s with the two keys against 7.5 s without (bench/bench_ledger.py, "into calls itself").
What the keys guaranteed, the code keeps: the invoicer counts a batch's calls on its file's row
in the same transaction that stores them (no file: the batch rolls back), an invoice claims its
calls by ``UPDATE … SET invoice_id`` in the transaction that creates it, and neither files nor
invoices are ever deleted.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
"""Names for SQLite's unnamed foreign keys, so the batch (a copy of the table) can leave them out."""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        with op.batch_alter_table("calls", naming_convention=NAMES, recreate="always") as batch:
            batch.drop_constraint("fk_calls_file_id_files", type_="foreignkey")
            batch.drop_constraint("fk_calls_invoice_id_invoices", type_="foreignkey")
            batch.drop_index("ix_calls_file_id")
        return
    for key in sa.inspect(bind).get_foreign_keys("calls"):
        op.drop_constraint(key["name"], "calls", type_="foreignkey")
    op.drop_index("ix_calls_file_id", table_name="calls")


def downgrade() -> None:
    raise NotImplementedError("cdrflow migrations go forward only")
