"""scaling out and sweeps: job priority, launcher and Slurm job id, sweep trial number, a user's
in-flight cap, artifact names (teacher-output caches), and the workers table

Revision ID: 0005_scale_out
Revises: 0004_job_baselines
Create Date: 2026-11-27 03:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005_scale_out'
down_revision = '0004_job_baselines'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.String(length=8), nullable=False, server_default='normal'))
        batch_op.add_column(sa.Column('launcher', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('launcher_job_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('trial_number', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_launcher_job_id'), ['launcher_job_id'], unique=False)
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_jobs_in_flight', sa.Integer(), nullable=True))
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=200), nullable=True))
        batch_op.create_index(batch_op.f('ix_artifacts_name'), ['name'], unique=False)
    op.create_table(
        'workers',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('host', sa.String(length=200), nullable=False),
        sa.Column('slots', sa.Integer(), nullable=False),
        sa.Column('gpus', sa.Boolean(), nullable=False),
        sa.Column('launcher', sa.String(length=16), nullable=False),
        sa.Column('queues', sa.JSON(), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_workers')),
        sa.UniqueConstraint('name', name=op.f('uq_workers_name')),
    )
    op.create_index(op.f('ix_workers_last_seen_at'), 'workers', ['last_seen_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_workers_last_seen_at'), table_name='workers')
    op.drop_table('workers')
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_artifacts_name'))
        batch_op.drop_column('name')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('max_jobs_in_flight')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_launcher_job_id'))
        batch_op.drop_column('trial_number')
        batch_op.drop_column('launcher_job_id')
        batch_op.drop_column('launcher')
        batch_op.drop_column('priority')
