"""why a job stopped: jobs.stop_reason (cancelled, pruned, lease_lost, failed), replacing the
"pruned by sweep" prefix of ``error`` that told the worker a stop request was a prune

Existing rows get it from their state (pruned, cancelled, failed); a trial still running with a
prune request pending (its error starts with "pruned by sweep") gets pruned, any other running job
with a cancel request gets cancelled, so a worker that stops it after the upgrade ends it as before.

Revision ID: 0006_stop_reason
Revises: 0005_scale_out
Create Date: 2026-12-06 16:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006_stop_reason'
down_revision = '0005_scale_out'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stop_reason', sa.String(length=16), nullable=True))
    jobs = sa.table('jobs', sa.column('state', sa.String), sa.column('stop_reason', sa.String),
                    sa.column('cancel_requested', sa.Boolean), sa.column('trial_number', sa.Integer),
                    sa.column('error', sa.Text))
    for state in ('pruned', 'cancelled', 'failed'):
        op.execute(jobs.update().where(jobs.c.state == state).values(stop_reason=state))
    asked = (jobs.c.state.in_(('running', 'exporting')), jobs.c.cancel_requested.is_(True))
    op.execute(jobs.update().where(*asked, jobs.c.trial_number.is_not(None), jobs.c.error.like('pruned by sweep%'))
               .values(stop_reason='pruned'))
    op.execute(jobs.update().where(*asked, jobs.c.stop_reason.is_(None)).values(stop_reason='cancelled'))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('stop_reason')
