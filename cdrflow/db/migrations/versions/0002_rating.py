"""rating: tariffs, schedules, rate sheet versions, reference changes; CLIs of every kind;
calls carry what the rating engine decided

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tariffs",
        sa.Column("code", sa.String(length=64), primary_key=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("schedule", sa.String(length=64), nullable=False),
        sa.Column("split_bands", sa.Boolean(), nullable=False),
        sa.Column("places", sa.Integer(), nullable=False),
        sa.Column("rounding", sa.String(length=16), nullable=False),
        sa.Column("charge_unanswered", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("holidays_as_weekend", sa.Boolean(), nullable=False),
        sa.Column("holiday_region", sa.String(length=16), nullable=False),
    )
    op.create_table(
        "rate_sheets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("carrier", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("source_name", sa.String(length=500), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("kind", "owner", "direction", "carrier", "version", name="uq_rate_sheet_version"),
    )
    op.create_table(
        "reference_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("per_minute_rate")
        batch.add_column(sa.Column("tariff", sa.String(length=64), nullable=True))
        batch.create_foreign_key("fk_customers_tariff", "tariffs", ["tariff"], ["code"])
        batch.add_column(sa.Column("billing_schedule", sa.String(length=16), nullable=False,
                                   server_default="monthly"))

    # Every existing CLI was an exact DDI: it becomes a CLI of kind "ddi".
    op.create_table(
        "customer_clis_v2",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("customer_code", sa.String(length=64), sa.ForeignKey("customers.code"), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("carrier", sa.String(length=64), nullable=True),
        sa.Column("effective_from", sa.Date(), nullable=True),
        sa.Column("effective_to", sa.Date(), nullable=True),
        sa.UniqueConstraint("kind", "value", "carrier", "effective_from", name="uq_customer_cli"),
    )
    op.execute("INSERT INTO customer_clis_v2 (customer_code, kind, value) SELECT customer_code, 'ddi', cli FROM customer_clis")
    op.drop_table("customer_clis")
    op.rename_table("customer_clis_v2", "customer_clis")
    op.create_index("ix_customer_clis_customer_code", "customer_clis", ["customer_code"])

    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("answered", sa.Boolean(), nullable=False, server_default=sa.true()))
        for name, type_ in (("charge_code", sa.String(length=64)), ("account_code", sa.String(length=64)),
                            ("cdr_cost", sa.BigInteger()), ("tariff", sa.String(length=64)),
                            ("code", sa.String(length=64)), ("destination", sa.String(length=200)),
                            ("band", sa.String(length=8)), ("billable_seconds", sa.Integer())):
            batch.add_column(sa.Column(name, type_, nullable=True))
        batch.create_index("ix_calls_file_id", ["file_id"])


def downgrade() -> None:
    raise NotImplementedError("cdrflow migrations go forward only")
