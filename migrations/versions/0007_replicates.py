"""paired comparisons and replicate seeds: jobs.comparison (the stored gain of a distill job over its
baseline, with its interval; worker.comparison), jobs.replicate_of (seed k > 0 of a ``seeds: N``
submission points at its primary job) and jobs.seeds (how many seeds the primary asked for)

Existing rows: no comparison (the serializer shows today's bare top-1 difference until one is
computed), no replicate, one seed.

Revision ID: 0007_replicates
Revises: 0006_stop_reason
Create Date: 2026-12-06 16:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007_replicates'
down_revision = '0006_stop_reason'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('comparison', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('replicate_of', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('seeds', sa.Integer(), nullable=False, server_default='1'))
        batch_op.create_index(batch_op.f('ix_jobs_replicate_of'), ['replicate_of'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_jobs_replicate_of_jobs'), 'jobs', ['replicate_of'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_jobs_replicate_of_jobs'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_jobs_replicate_of'))
        batch_op.drop_column('seeds')
        batch_op.drop_column('replicate_of')
        batch_op.drop_column('comparison')
