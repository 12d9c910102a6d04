"""billing: customers' tax, currency, address and terms; invoice lines with tax and what they
cover; gap-free number sequences; credit notes; billing runs closed once per customer and period;
charges defined in cdrflow; fixed-fee sheets and billing transactions; invoice deliveries

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

MONEY = sa.BigInteger()  # cdrflow.db.types.Money: integer micros


def upgrade() -> None:
    with op.batch_alter_table("carriers") as batch:
        batch.add_column(sa.Column("sdr_for_billing", sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("address", sa.Text(), nullable=True))
        batch.add_column(sa.Column("tax_code", sa.String(16), nullable=False, server_default="standard"))
        batch.add_column(sa.Column("currency", sa.String(3), nullable=False, server_default="GBP"))
        batch.add_column(sa.Column("payment_terms_days", sa.Integer(), nullable=False, server_default="30"))
        batch.add_column(sa.Column("billing_starts", sa.Date(), nullable=True))
    with op.batch_alter_table("invoices") as batch:
        batch.add_column(sa.Column("currency", sa.String(3), nullable=False, server_default="GBP"))
        batch.add_column(sa.Column("net", MONEY, nullable=True))
        batch.add_column(sa.Column("tax", MONEY, nullable=True))
        batch.add_column(sa.Column("issued_on", sa.Date(), nullable=True))
        batch.add_column(sa.Column("due_on", sa.Date(), nullable=True))
        batch.add_column(sa.Column("status", sa.String(12), nullable=False, server_default="issued"))
        batch.add_column(sa.Column("document", sa.String(64), nullable=True))
    with op.batch_alter_table("charges") as batch:
        batch.add_column(sa.Column("tax_code", sa.String(16), nullable=False, server_default="standard"))
        batch.add_column(sa.Column("kind", sa.String(12), nullable=False, server_default="calls"))
        batch.add_column(sa.Column("covered_from", sa.Date(), nullable=True))
        batch.add_column(sa.Column("covered_to", sa.Date(), nullable=True))
        batch.add_column(sa.Column("customer_charge_id", sa.Integer(), nullable=True))

    op.create_index("ix_calls_invoice", "calls", ["invoice_id"], postgresql_where=sa.text("invoice_id IS NOT NULL"),
                    sqlite_where=sa.text("invoice_id IS NOT NULL"))
    op.create_table(
        "number_sequences",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("next_value", sa.Integer(), nullable=False),
    )
    # Invoices issued before were numbered INV-<id>: the sequence carries on after the last.
    op.execute("INSERT INTO number_sequences (name, prefix, next_value) "
               "SELECT 'invoice', 'INV-', coalesce(max(id), 0) + 1 FROM invoices")
    op.execute("INSERT INTO number_sequences (name, prefix, next_value) VALUES ('credit-note', 'CN-', 1)")

    op.create_table(
        "credit_notes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("number", sa.String(32), nullable=False, unique=True),
        sa.Column("invoice_id", sa.Integer(), sa.ForeignKey("invoices.id"), nullable=False, unique=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operator", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("net", MONEY, nullable=False),
        sa.Column("tax", MONEY, nullable=False),
        sa.Column("total", MONEY, nullable=False),
        sa.Column("document", sa.String(64), nullable=True),
    )
    op.create_table(
        "billing_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("customer", sa.String(64), sa.ForeignKey("customers.code"), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.UniqueConstraint("customer", "period_start", "period_end", name="uq_billing_runs_customer_period"),
    )
    # Runs closed before: one per invoice issued.
    op.execute("INSERT INTO billing_runs (id, customer, period_start, period_end, closed_at, closed_by) "
               "SELECT run_id, customer, period_start, period_end, issued_at, 'operator' FROM invoices")
    op.create_table(
        "customer_charges",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("customer", sa.String(64), sa.ForeignKey("customers.code"), nullable=False, index=True),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("frequency", sa.String(12), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("end", sa.Date(), nullable=True),
        sa.Column("billed_until", sa.Date(), nullable=True),
        sa.Column("tax_code", sa.String(16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "fee_sheets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tariff", sa.String(64), sa.ForeignKey("tariffs.code"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tariff", "version", name="uq_fee_sheets_tariff_version"),
    )
    op.create_table(
        "billing_transactions",
        sa.Column("carrier_transaction_id", sa.Integer(), sa.ForeignKey("carrier_transactions.id"), primary_key=True),
        sa.Column("file_id", sa.String(36), nullable=False, index=True),
        sa.Column("customer", sa.String(64), nullable=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("description", sa.String(200), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("price", MONEY, nullable=True),
        sa.Column("cost", MONEY, nullable=True),
        sa.Column("charge_on", sa.Date(), nullable=True),
        sa.Column("invoice_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_billing_transactions_outstanding", "billing_transactions", ["customer", "status", "invoice_id"])
    op.create_table(
        "file_reversals",
        sa.Column("file_id", sa.String(36), sa.ForeignKey("files.id"), primary_key=True),
        sa.Column("operator", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("command_id", sa.String(36), nullable=False),
        sa.Column("reversed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "invoice_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("document_number", sa.String(32), nullable=False, index=True),
        sa.Column("to_address", sa.String(320), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.String(200), nullable=False, unique=True),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    raise NotImplementedError("cdrflow migrations go forward only")
