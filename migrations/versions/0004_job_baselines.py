"""jobs.baseline_of: a baseline run names the distill job it is the teacher-less twin of

Revision ID: 0004_job_baselines
Revises: 0003_token_lifetimes
Create Date: 2026-11-27 00:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004_job_baselines'
down_revision = '0003_token_lifetimes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('baseline_of', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_baseline_of'), ['baseline_of'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_jobs_baseline_of_jobs'), 'jobs', ['baseline_of'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_jobs_baseline_of_jobs'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_jobs_baseline_of'))
        batch_op.drop_column('baseline_of')
