"""Re-attaching to a Slurm job that outlived its worker, from the reconciler.

A local run dies with its worker, so an expired lease means a dead run: the reconciler restarts
the job as a new attempt. A Slurm job lives on without its worker (a worker stopped gracefully
leaves it running on purpose, see ``JobRunner._supervise``), so for a job with ``launcher='slurm'``
the reconciler first asks Slurm. While Slurm still knows the job (running, or ended within
``MinJobAge``), this worker takes the expired lease over for the SAME attempt
(``leases.take_over_lease``, a compare-and-set: of all reconcilers exactly one wins) and
supervises the existing Slurm job in a thread: metrics, cancel, then export and the final state,
as if it had submitted it. No second Slurm job is ever submitted for the attempt. Only when Slurm
no longer knows the job is the attempt restarted as usual (its lease file is expired first, so the
new attempt does not wait out the long Slurm grace, see ``worker.slurm.lease_file_grace_s``).

A worker without the Slurm launcher never judges a Slurm job: it cannot ask Slurm, and restarting
a job whose Slurm job still runs would train it twice.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from celery import Celery

from deit_core.lease import read_lease_file, write_lease_file
from server import leases
from server.db import Database
from server.models import Job
from server.settings import Settings
from server.vocabulary import RUNNING, SLURM

from . import slurm
from .launchers import Run
from .lease import LocalLeases, lease_owner
from .runner import JobRunner

log = logging.getLogger(__name__)


class SlurmReattach:
    """The reconciler's hook for an expired lease: ``hook(job_id, attempt, owner, expires)`` is
    True when it dealt with the job (re-attached, or left it to a Slurm worker), False when the
    reconciler should restart or fail it as usual."""

    def __init__(self, celery: Celery, settings: Settings, database: Database, local: LocalLeases,
                 stopping: threading.Event, sweep_hook: Callable[[int], None] | None = None):
        self.celery, self.settings, self.db, self.local, self.stopping = celery, settings, database, local, stopping
        self.sweep_hook = sweep_hook  # the run task's (worker.tasks): a re-attached trial's sweep goes on as it runs

    def __call__(self, job_id: int, attempt: int, owner: str | None, expires) -> bool:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                return False
            launcher, slurm_id, state, run_dir = job.launcher, job.launcher_job_id, job.state, job.run_dir
        if self.settings.launcher != SLURM:
            return launcher == SLURM
        if state != RUNNING or (launcher not in (None, SLURM)):
            return False
        try:
            # the id, or (a worker that died between sbatch and recording it) the attempt's job name
            slurm_id = slurm_id if launcher == SLURM and slurm_id else slurm.find_job(job_id, attempt)
            if not slurm_id:
                return False
            st = slurm.job_state(slurm_id)
        except slurm.SlurmError as e:
            log.warning("job %s: cannot ask Slurm about its job now (%s); judging it later", job_id, e)
            return True
        if st.state is None:
            self._expire_lease_file(run_dir, owner)
            return False
        runner = JobRunner(self.celery, self.settings, self.db, job_id, self.stopping, self.local, self.sweep_hook)
        new_owner = lease_owner(runner.worker_name, attempt)
        with self.db.session() as s:
            won = leases.take_over_lease(s, job_id, attempt, owner, expires, new_owner, runner.worker_name,
                                            self.settings.lease_s)
        if not won:
            return True  # another worker re-attached first, or the job moved on
        log.warning("job %s: attempt %d's worker (%s) is gone but its Slurm job %s is %s; re-attaching",
                    job_id, attempt, owner, slurm_id, st.state)
        run = runner.launcher.reattach(slurm_id)
        threading.Thread(target=self._supervise, args=(runner, attempt, new_owner, run),
                         name=f"reattach-{job_id}-{attempt}", daemon=True).start()
        return True

    @staticmethod
    def _supervise(runner: JobRunner, attempt: int, owner: str, run: Run) -> None:
        try:
            runner.reattach(attempt, owner, run)
        except Exception:  # the thread must say why it ended; the lease then expires and is judged again
            log.exception("job %s: re-attached supervision failed", runner.job_id)

    @staticmethod
    def _expire_lease_file(run_dir: str | None, owner: str | None) -> None:
        """Slurm no longer knows the job, so none of its processes is left: the next attempt need
        not wait for the long Slurm lease-file grace."""
        if not run_dir or read_lease_file(Path(run_dir)) is None:
            return
        try:
            write_lease_file(Path(run_dir), owner or "", time.time())
        except OSError as e:
            log.warning("could not expire the lease file in %s: %s", run_dir, e)
