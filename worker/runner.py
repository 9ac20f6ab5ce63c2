"""One delivery of the run task: claim a job, train, export, register artifacts, release or fail
dependants. Every state change goes through :mod:`server.lifecycle`.

Tasks take a job id, reload everything from the database and keep no ORM object across steps,
so the session is short-lived even when the run takes hours. Every log record carries the job id.

The runner only sequences the steps; each job is elsewhere:

- :class:`worker.attempt.Attempt`: every write under the attempt's lease, waiting out a database outage;
- ``worker.launchers``: starting, polling, stopping and re-attaching runs (local torchrun or Slurm);
- ``worker.supervise`` + ``worker.progress``: watching a run and streaming its metrics;
- :func:`worker.outcome.attempt_outcome`: what an exit code, the processes' errors and a stop
  request mean for the attempt (a pure function);
- ``worker.artifacts`` and ``worker.teacher_cache``: what the run produced, registered.
"""
from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Callable

from celery import Celery
from sqlalchemy import func, select

from deit_core.config import JobConfig
from deit_core.files import write_json_atomic
from server import lifecycle
from server.db import Database
from server.leases import LeaseLost
from server.models import Job, MetricPoint
from server.settings import Settings
from server.vocabulary import CANCELLED, EXPORTING, FAILED, QUEUED, RUNNING, SUCCEEDED, TEACHER

from . import launch
from . import teacher_cache as caches
from .artifacts import register_checkpoint, register_export, register_rejected_report, sweep_strays
from .attempt import Attempt
from .job_config import resolved_config, stored_config
from .launchers import LocalLauncher, Run, launcher_for
from .lease import LeaseKeeper, LocalLeases, lease_owner, wait_for_earlier_attempts
from .outcome import (
    CONTINUE,
    DETACH,
    EXPORT,
    FAIL,
    LEASE_LOST,
    LOSE,
    REQUEUE,
    RETRY,
    STOP,
    SUCCEED,
    TRAIN,
    Outcome,
    StepErrors,
    StopRequest,
    attempt_outcome,
)
from .progress import ProgressWriter
from .rank_failure import read_log_tail
from .registry import worker_name
from .retention import carry_over_checkpoint, prune_attempts
from .run_contract import EXPORT_DIR, EXPORT_ERROR, EXPORT_REJECTED, FINAL, JOB_JSON, METRICS, OUTPUT_LOG, attempt_dir
from .supervise import Ended, supervise

logger = logging.getLogger(__name__)


class JobLog(logging.LoggerAdapter):
    """Prefixes every message with the job id (and puts it in ``record.job_id``)."""

    def process(self, msg, kwargs):
        kwargs.setdefault("extra", {})["job_id"] = self.extra["job_id"]
        return f"[job {self.extra['job_id']}] {msg}", kwargs


class JobRunner:
    """Runs one job from ``queued`` to a final state. One instance per delivery. ``sweep_hook(job_id)``
    (the run task's one place that consults a sweep) runs after each stored validation point of a
    sweep's trial and after the delivery ends."""

    def __init__(self, celery: Celery, settings: Settings, database: Database, job_id: int,
                 stopping: threading.Event | None = None, local_leases: LocalLeases | None = None,
                 sweep_hook: Callable[[int], None] | None = None):
        self.celery, self.settings, self.db, self.job_id = celery, settings, database, job_id
        self.stopping = stopping or threading.Event()
        self.local_leases = local_leases
        self.sweep_hook = sweep_hook
        self.log = JobLog(logger, {"job_id": job_id})
        self.worker_name = worker_name(settings)  # DISTILLERY_WORKER_NAME or host:pid (worker.registry)
        self.launcher = launcher_for(settings)  # training: local torchrun or Slurm (DISTILLERY_LAUNCHER)
        self.exporter = LocalLauncher(settings.worker_gpus[:1])  # the exporter always runs here, on one GPU at most

    # -- entry ------------------------------------------------------------------------------------
    def run(self) -> str:
        try:
            with self.db.session() as s:
                job = s.get(Job, self.job_id)
                if job is None:
                    self.log.warning("no such job; ignoring the message")
                    return "missing"
                number = job.attempt
                if self.stopping.is_set() and job.state == QUEUED:
                    # Messages are acked on receipt; one taken during shutdown is handed back, not lost.
                    lifecycle.enqueue(s, self.celery, self.settings, self.job_id)
                    self.log.info("worker shutting down; message handed back to the queue")
                    return "deferred"
                run_dir = attempt_dir(self.settings.runs_path, self.job_id, number)
                owner = lease_owner(self.worker_name, number)  # unique per worker process
                if not lifecycle.claim(s, self.job_id, number, self.worker_name, str(run_dir), owner, self.settings.lease_s):
                    self.log.info("not queued (state %s); duplicate or cancelled delivery, nothing to do", job.state)
                    return "skipped"
            self.log.info("claimed attempt %d (lease %s); run directory %s", number, owner, run_dir)
            attempt = self._hold(number, owner, run_dir)
            return self._guarded(attempt, lambda: self._run(attempt, run_dir))
        finally:
            self._consult_sweep()

    def reattach(self, number: int, owner: str, run: Run) -> str:
        """Supervise attempt ``number``'s run (a Slurm job), still running (or ended) after its
        worker stopped, under the lease this worker just took over (``leases.take_over_lease``);
        then go on as if this worker had started it (export, artifacts, final state)."""
        try:
            with self.db.session() as s:
                run_dir = Path(s.get(Job, self.job_id).run_dir)
                points_after = s.scalar(select(func.max(MetricPoint.step)).where(
                    MetricPoint.job_id == self.job_id, MetricPoint.attempt == number))
            self.log.info("re-attached to attempt %d's %s (lease %s)", number, run.describe(), owner)
            attempt = self._hold(number, owner, run_dir)
            return self._guarded(attempt, lambda: self._run(attempt, run_dir, attached=run, points_after=points_after))
        finally:
            self._consult_sweep()

    def _hold(self, number: int, owner: str, run_dir: Path) -> Attempt:
        """Start the heartbeats of the attempt's lease; the attempt that writes under it."""
        keeper = LeaseKeeper(self.db, self.job_id, number, owner, self.settings.lease_s, run_dir, self.local_leases,
                             self.log, file_grace_s=self.launcher.lease_file_grace_s())
        keeper.start()
        return Attempt(self.db, self.job_id, number, owner, keeper, self.log, outage_s=max(300.0, 10 * self.settings.lease_s))

    def _guarded(self, attempt: Attempt, body: Callable[[], str]) -> str:
        """``body()``; a lost lease or anything unexpected still ends the attempt as it must."""
        try:
            return body()
        except LeaseLost:
            return self._end(attempt, Outcome(LOSE))
        except Exception as e:  # anything unexpected ends the job failed, with the reason
            self.log.exception("failed")
            return self._end(attempt, Outcome(FAIL, FAILED, f"{type(e).__name__}: {e}", fail_children=True))
        finally:
            attempt.keeper.stop()

    def _consult_sweep(self) -> None:
        if self.sweep_hook is not None:
            self.sweep_hook(self.job_id)

    # -- the steps --------------------------------------------------------------------------------
    def _run(self, attempt: Attempt, run_dir: Path, attached: Run | None = None, points_after: int | None = None) -> str:
        with self.db.session() as s:
            job = s.get(Job, self.job_id)
            kind, trial = job.kind, job.trial_number is not None
            stored = stored_config(job.config)
            config = resolved_config(s, stored)
        on_val_point = (lambda: self._consult_sweep()) if trial else None  # a sweep's pruner judges each epoch
        progress = ProgressWriter(attempt, run_dir / METRICS, points_after, on_val_point)
        run = attached if attached is not None else self._start(attempt, run_dir, config)
        ended = self._supervise(run, attempt, progress)
        outcome = attempt_outcome(TRAIN, ended.exit_code, StepErrors(read_log_tail(run_dir / OUTPUT_LOG), progress.engine_error,
                                                                     launcher=run.ended_reason()), self._stop(ended, attempt))
        if outcome.action != CONTINUE:
            return self._end(attempt, outcome, run)
        if kind == caches.TEACHER_OUTPUTS:  # no model, no export: register the cache, release the students
            if not caches.finish_teacher_outputs(attempt, self.celery, self.settings, run_dir, stored.teacher.checkpoint):
                return self._stopped(attempt)
            self.log.info("succeeded")
            return SUCCEEDED
        # the checkpoint (a pipeline's distill job can start from here)
        if not attempt.move(RUNNING, EXPORTING):
            return self._stopped(attempt)
        ckpt_id = register_checkpoint(attempt, self.settings.artifacts_path, run_dir / FINAL)
        caches.register(attempt, run_dir)  # a teacher-output cache this run wrote ("auto"), for later students
        if kind == TEACHER:
            released = attempt.release_children(self.celery, self.settings, ckpt_id)
            if released:
                self.log.info("released dependent jobs %s with checkpoint artifact %d", released, ckpt_id)
        return self._export(attempt, run_dir, config)

    def _start(self, attempt: Attempt, run_dir: Path, config: JobConfig) -> Run:
        """A new run of the attempt, once no earlier attempt can still be training; it resumes from
        an earlier attempt's checkpoint when the config is the same."""
        wait_for_earlier_attempts(run_dir.parent, attempt.number, self.settings.lease_s,
                                  lambda: self.stopping.is_set() or attempt.lost, self.log)
        attempt.confirm()  # the wait may have been long: nothing is written for an attempt that lost its lease
        swept = attempt.quietly(lambda s: sweep_strays(s, self.settings.artifacts_path, self.job_id))
        if swept:  # what a worker killed mid-registration of an earlier attempt left
            self.log.warning("removed %d unregistered file(s) of earlier attempts: %s", len(swept), [str(f) for f in swept])
        config_path = run_dir / JOB_JSON
        write_json_atomic(config_path, config.to_dict())
        resume = carry_over_checkpoint(run_dir.parent, attempt.number, run_dir, config.to_dict(), self.log)
        pruned = prune_attempts(run_dir.parent, attempt.number, self.settings.keep_attempts)
        if pruned:
            self.log.info("removed old run directories %s (DISTILLERY_KEEP_ATTEMPTS=%d)",
                          [p.name for p in pruned], self.settings.keep_attempts)
        spec = launch.TrainSpec(self.job_id, attempt.number, run_dir, config_path, nodes=config.resources.nodes,
                                processes_per_node=config.resources.processes, resume=resume,
                                extra_args=tuple(caches.train_args(self.settings)))  # the cache store and cap
        return self.launcher.start(spec, self.log)

    def _export(self, attempt: Attempt, run_dir: Path, config: JobConfig) -> str:
        """Run the exporter; it says why it failed in ``export.error.json`` (exit 3: parity gate)."""
        out, rejected, error_file = run_dir / EXPORT_DIR, run_dir / EXPORT_REJECTED, run_dir / EXPORT_ERROR
        attempt.confirm()  # no exporter writes into the run of an attempt that lost its lease
        for d in (out, rejected):
            shutil.rmtree(d, ignore_errors=True)
        error_file.unlink(missing_ok=True)
        cmd = launch.export_command(run_dir / FINAL, out, config.data.val, self.settings.export_args, error_file=error_file)
        self.log.info("exporting: %s", " ".join(cmd))
        run = self.exporter.run_command(cmd, run_dir / OUTPUT_LOG, launch.child_env(self.settings.worker_gpus[:1], 1))
        ended = self._supervise(run, attempt)
        errors = StepErrors(read_log_tail(run_dir / OUTPUT_LOG), error_file=_read_text(error_file))
        outcome = attempt_outcome(EXPORT, ended.exit_code, errors, self._stop(ended, attempt))
        if outcome.action == SUCCEED:
            register_export(attempt, self.settings.artifacts_path, out)
            if not attempt.finish(SUCCEEDED, from_states=EXPORTING):
                return self._stopped(attempt)
            self.log.info("succeeded")
            return SUCCEEDED
        if outcome.keep_rejected_report:
            register_rejected_report(attempt, self.settings.artifacts_path, rejected)
        return self._end(attempt, outcome, run)

    def _supervise(self, run: Run, attempt: Attempt, progress: ProgressWriter | None = None) -> Ended:
        return supervise(run, attempt, self.stopping, self.settings.poll_s, self.settings.cancel_grace_s, progress)

    @staticmethod
    def _stop(ended: Ended, attempt: Attempt) -> StopRequest | None:
        """The stop request the watch acted on, or a lease lost since the run ended."""
        if ended.stop is not None:
            return ended.stop
        return StopRequest(LEASE_LOST) if attempt.lost else None

    # -- the end ------------------------------------------------------------------------------------
    def _stopped(self, attempt: Attempt) -> str:
        """The state changed under a step (a cancel or a prune) while the lease is still held."""
        attempt.check()
        return self._end(attempt, attempt_outcome(TRAIN, None, stop=attempt.stop_request()))

    def _end(self, attempt: Attempt, outcome: Outcome, run: Run | None = None) -> str:
        return carry_out(outcome, attempt, self.celery, self.settings, run)


def carry_out(outcome: Outcome, attempt: Attempt, celery: Celery, settings: Settings, run: Run | None = None) -> str:
    """Carry out ``outcome`` (``worker.outcome``): the job's state, its dependants, the log. Returns
    what the delivery did (a final state, or lease_lost, detached, requeued)."""
    log = attempt.log
    if outcome.action == LOSE:
        log.warning("lost the lease of attempt %d; its run is stopped and nothing more is written", attempt.number)
        return "lease_lost"
    if outcome.action == DETACH:
        attempt.keeper.keep_file = True  # the run goes on; its lease file must outlive this worker
        log.info("worker shutting down; left %s running for the next worker to re-attach",
                 run.describe() if run is not None else "the run")
        return "detached"
    if outcome.action == REQUEUE:
        moved = attempt.hand_back(celery, settings)
        log.warning("worker stopped during the run; %s", "re-queued as a new attempt" if moved else "state changed")
        return "requeued"
    if outcome.action == STOP:  # by a user, or (a sweep's trial) by its pruner: then it ends pruned
        attempt.finish(outcome.state, error=outcome.reason)
        attempt.fail_children("was cancelled", state=CANCELLED)
        return outcome.state
    log.warning(outcome.reason)
    if outcome.action == RETRY:  # a new attempt (from the last checkpoint), up to max_attempts in a row
        result = attempt.restart_or_fail(celery, settings, outcome.reason)
        if result == FAILED:
            attempt.fail_children("failed")
        elif result is None:
            attempt.check()
            log.warning("could not restart or fail (state changed meanwhile)")
        else:
            log.info("queued attempt %d (resumes from the last checkpoint)", attempt.number + 1)
        return result or FAILED
    attempt.finish(FAILED, from_states=outcome.from_states, error=outcome.reason)
    if outcome.fail_children:
        attempt.fail_children("failed")
    return FAILED


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
