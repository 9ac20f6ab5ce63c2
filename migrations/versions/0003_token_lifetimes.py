"""token names, expiry and revocation

Revision ID: 0003_token_lifetimes
Revises: 0002_job_leases
Create Date: 2026-11-26 23:35:01
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_token_lifetimes'
down_revision = '0002_job_leases'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('revoked_at')
        batch_op.drop_column('expires_at')
        batch_op.drop_column('name')
