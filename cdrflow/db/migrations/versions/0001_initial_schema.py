"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 06:09:37.191798
"""

from alembic import op
import sqlalchemy as sa



revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('carriers',
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('file_format', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('code')
    )
    op.create_table('customers',
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('billing_email', sa.String(length=320), nullable=True),
    sa.Column('per_minute_rate', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('code')
    )
    op.create_table('files',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('carrier', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('period', sa.String(length=8), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('original_name', sa.String(length=500), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('rows', sa.Integer(), nullable=True),
    sa.Column('rejected', sa.Integer(), nullable=True),
    sa.Column('calls', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_files_fingerprint'), ['fingerprint'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('topic', sa.String(length=200), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_published_at'), ['published_at'], unique=False)

    op.create_table('customer_clis',
    sa.Column('cli', sa.String(length=32), nullable=False),
    sa.Column('customer_code', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['customer_code'], ['customers.code'], ),
    sa.PrimaryKeyConstraint('cli')
    )
    with op.batch_alter_table('customer_clis', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customer_clis_customer_code'), ['customer_code'], unique=False)

    op.create_table('file_candidates',
    sa.Column('file_id', sa.String(length=36), nullable=False),
    sa.Column('candidate_file_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['candidate_file_id'], ['files.id'], ),
    sa.ForeignKeyConstraint(['file_id'], ['files.id'], ),
    sa.PrimaryKeyConstraint('file_id', 'candidate_file_id')
    )
    op.create_table('invoices',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('number', sa.String(length=32), nullable=True),
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('customer', sa.String(length=64), nullable=False),
    sa.Column('period_start', sa.Date(), nullable=False),
    sa.Column('period_end', sa.Date(), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('calls_csv', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['customer'], ['customers.code'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('customer', 'period_start', 'period_end', name='uq_invoices_customer_period'),
    sa.UniqueConstraint('number')
    )
    op.create_table('rejected_rows',
    sa.Column('file_id', sa.String(length=36), nullable=False),
    sa.Column('row', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['file_id'], ['files.id'], ),
    sa.PrimaryKeyConstraint('file_id', 'row')
    )
    op.create_table('calls',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('file_id', sa.String(length=36), nullable=False),
    sa.Column('row', sa.Integer(), nullable=False),
    sa.Column('carrier', sa.String(length=64), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('cli', sa.String(length=32), nullable=False),
    sa.Column('dialled', sa.String(length=32), nullable=False),
    sa.Column('start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration', sa.Integer(), nullable=False),
    sa.Column('customer', sa.String(length=64), nullable=True),
    sa.Column('charge', sa.BigInteger(), nullable=True),
    sa.Column('cost', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('invoice_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['file_id'], ['files.id'], ),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('file_id', 'row', name='uq_calls_file_row')
    )
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.create_index('ix_calls_outstanding', ['customer', 'status', 'invoice_id'], unique=False)

    op.create_table('charges',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('invoice_id', sa.Integer(), nullable=False),
    sa.Column('description', sa.String(length=200), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('charges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_charges_invoice_id'), ['invoice_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('charges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_charges_invoice_id'))

    op.drop_table('charges')
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index('ix_calls_outstanding')

    op.drop_table('calls')
    op.drop_table('rejected_rows')
    op.drop_table('invoices')
    op.drop_table('file_candidates')
    with op.batch_alter_table('customer_clis', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customer_clis_customer_code'))

    op.drop_table('customer_clis')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_published_at'))

    op.drop_table('outbox')
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_files_fingerprint'))

    op.drop_table('files')
    op.drop_table('customers')
    op.drop_table('carriers')

