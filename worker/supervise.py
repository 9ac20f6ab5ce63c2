"""Watching one started run (training or the export) until it ends or must be stopped.

Every poll: the run's new events go into the database (``worker.progress``), then, in this order,
a lost lease stops the run, an exit ends the watch, a cancel (or a sweep's prune) stops the run,
and a stopping worker stops it -- or, for a run that outlives its worker (a Slurm job), leaves it
for the next worker to re-attach. The watch only reports what happened (:class:`Ended`);
``worker.outcome`` decides what it means.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from server.leases import LeaseLost

from .attempt import Attempt
from .launchers import Run
from .outcome import LEASE_LOST, WORKER_STOPPING, StopRequest
from .progress import ProgressWriter


@dataclass(frozen=True)
class Ended:
    """How the watch ended: the run's exit code, or the stop request it acted on (then no exit code)."""

    exit_code: int | None
    stop: StopRequest | None = None


def supervise(run: Run, attempt: Attempt, stopping: threading.Event, poll_s: float, grace_s: float,
              progress: ProgressWriter | None = None) -> Ended:
    """Record where ``run`` runs, then poll it every ``poll_s`` (see the module docstring); a run
    stopped here gets ``grace_s`` between SIGTERM (scancel) and SIGKILL."""
    log = attempt.log
    attempt.record_launch(run.row_values(), must_reach=run.detachable)  # a Slurm id must reach the row; a pid may wait
    while True:
        rc = run.poll()
        if progress is not None:
            try:
                progress.update()
            except LeaseLost:
                rc = None
        if attempt.lost:
            log.warning("lease lost; stopping %s", run.describe())
            run.stop(grace_s, log)
            return Ended(None, StopRequest(LEASE_LOST))
        if rc is not None:
            if progress is not None:
                progress.flush()
            return Ended(rc)
        if attempt.cancel_requested():
            log.info("cancel requested; stopping %s", run.describe())
            run.stop(grace_s, log)
            return Ended(None, attempt.stop_request())
        if stopping.is_set():
            if run.detachable:
                return Ended(None, StopRequest(WORKER_STOPPING, detach=True))
            log.info("worker shutting down; stopping %s", run.describe())
            run.stop(grace_s, log)
            return Ended(None, StopRequest(WORKER_STOPPING))
        time.sleep(poll_s)
