"""The job life cycle, in one place: create, queue, claim, finish, cancel, retry, a new attempt.

State only moves through :func:`transition`, an ``UPDATE ... WHERE id = :id AND state IN (...)``:
whoever changes the row first wins, so a Celery message delivered twice, a cancel racing a start,
or two workers racing each other can never run a job twice or resurrect a finished one. The API
and the worker both call the functions below; neither writes ``Job.state`` itself.
"""
from __future__ import annotations

import copy
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import routing
from .models import Job, User, utcnow
from .settings import Settings
from .vocabulary import (
    ACTIVE_STATES,
    CANCELLED,
    DEFAULT_PRIORITY,
    FAILED,
    FINAL_STATES,
    IN_PROGRESS_STATES,
    PRUNED,
    QUEUED,
    RETRYABLE_STATES,
    RUN_TASK,
    RUNNING,
    SUCCEEDED,
    SWEEP,
)

log = logging.getLogger(__name__)

# What a new attempt starts without: the previous attempt's progress, owner, lease and outcome.
FRESH_ATTEMPT = {"progress": {}, "metrics": {}, "started_at": None, "finished_at": None, "worker": None,
                 "pid": None, "cancel_requested": False, "run_dir": None, "error": None,
                 "lease_owner": None, "lease_expires_at": None, "heartbeat_at": None,
                 "launcher": None, "launcher_job_id": None}  # a re-attach must never find the last attempt's Slurm job
# How an attempt was followed (``then`` in its history entry): the service started the next one on
# its own (counts against ``max_attempts``), a user retried, or a stopping worker handed it back.
RESTARTED, RETRIED, HANDED_BACK = "restarted", "retried", "handed_back"


class JobConflict(ValueError):
    """The job is not in a state that allows the action (answered 409, naming ``field``)."""

    def __init__(self, message: str, field: str = "state"):
        super().__init__(message)
        self.message, self.field = message, field


# ---------------------------------------------------------------------------------------------
# Compare-and-set
# ---------------------------------------------------------------------------------------------
def transition(db: Session, job_id: int, from_states: str | Iterable[str], to_state: str, *,
               where: tuple = (), **values: Any) -> bool:
    """Move job ``job_id`` to ``to_state`` only if it is in one of ``from_states`` (and ``where``,
    e.g. :func:`lease_held`, holds); commit.

    Returns:
        True if this caller made the change (exactly one caller can win).
    """
    states = (from_states,) if isinstance(from_states, str) else tuple(from_states)
    values = {"state": to_state, "updated_at": utcnow(), **values}
    if to_state in FINAL_STATES and "finished_at" not in values:
        values["finished_at"] = utcnow()
    res = db.execute(update(Job).where(Job.id == job_id, Job.state.in_(states), *where).values(**values)
                     .execution_options(synchronize_session=False))
    db.commit()
    return res.rowcount == 1


# ---------------------------------------------------------------------------------------------
# Creating and queueing
# ---------------------------------------------------------------------------------------------
def create_jobs(db: Session, user: User, specs: list[dict[str, Any]]) -> list[Job]:
    """Insert validated specs (:func:`server.submissions.validate_submission`) in one transaction;
    a dependent job gets the previous one as parent."""
    jobs: list[Job] = []
    for spec in specs:
        job = Job(kind=spec["kind"], name=spec["name"], config=spec["config"], owner_id=user.id,
                  state=QUEUED, attempt=1, progress={}, metrics={}, attempt_history=[],
                  max_attempts=int((spec["config"].get("resources") or {}).get("max_attempts", 3)),
                  priority=spec.get("priority") or DEFAULT_PRIORITY)
        if spec["after_previous"]:
            job.parent_id = jobs[-1].id
        elif spec.get("parent_index") is not None:  # a pipeline's student after its teacher_outputs job
            job.parent_id = jobs[spec["parent_index"]].id
        elif spec.get("parent_id") is not None:
            job.parent_id = spec["parent_id"]
        if spec.get("trial_number") is not None:  # a sweep's trial (worker.sweep)
            job.trial_number = spec["trial_number"]
        if spec.get("baseline_of") is not None:  # the same student without a teacher (submissions.baseline_spec)
            job.baseline_of = jobs[spec["baseline_of"]].id
        db.add(job)
        db.flush()
        jobs.append(job)
    db.commit()
    return jobs


def waits_for_teacher(job: Job) -> bool:
    """A pipeline's distill job waits (queued, no message) until its teacher checkpoint exists."""
    return job.parent_id is not None and job.config.get("teacher", {}).get("checkpoint") is None


def enqueue(db: Session, celery, settings: Settings, job_id: int) -> str:
    """Send the run message for ``job_id`` by task name and remember its id (for revoke on cancel),
    to the queue of workers big enough for it at its priority (``server.routing``)."""
    job = db.get(Job, job_id)
    queue = routing.queue_for(settings, job.config if job else {})
    result = celery.send_task(RUN_TASK, args=[job_id], queue=queue,
                              priority=routing.broker_priority(job.priority if job else None))
    db.execute(update(Job).where(Job.id == job_id).values(task_id=result.id, enqueued_at=utcnow()))
    db.commit()
    log.info("job %s queued as task %s on %s", job_id, result.id, queue)
    return result.id


def submit(db: Session, celery, settings: Settings, user: User, specs: list[dict[str, Any]]) -> list[Job]:
    """Create the jobs and queue those that can start. A broker that cannot take the message fails
    the recorded job with the reason (nothing submitted is hidden) and re-raises."""
    jobs = create_jobs(db, user, specs)
    for job in jobs:
        if waits_for_teacher(job):
            continue
        try:
            enqueue(db, celery, settings, job.id)
        except Exception as e:
            log.exception("job %s: could not queue", job.id)
            transition(db, job.id, QUEUED, FAILED, error=f"could not queue: {e}")
            raise
    return jobs


# ---------------------------------------------------------------------------------------------
# User actions
# ---------------------------------------------------------------------------------------------
def cancel(db: Session, celery, job: Job, by: str) -> None:
    """Queued: cancelled at once (the message is revoked; a late delivery finds the state changed).
    Running/exporting: flag the row; the worker supervising it stops the process group.

    Raises:
        JobConflict: the job has already ended.
    """
    if transition(db, job.id, QUEUED, CANCELLED, error=f"cancelled by {by}"):
        settings = getattr(celery, "distillery_settings", None)
        if job.task_id and (settings is None or settings.broker_broadcasts):
            try:
                celery.control.revoke(job.task_id)
            except Exception:  # revoke is an optimisation; the CAS already made the message a no-op
                log.warning("job %s: revoke of %s failed", job.id, job.task_id, exc_info=True)
        fail_children(db, job, "was cancelled", state=CANCELLED)
        return
    flagged = db.execute(update(Job).where(Job.id == job.id, Job.state.in_(IN_PROGRESS_STATES))
                         .values(cancel_requested=True)).rowcount == 1  # a CAS too: a worker may have just claimed it
    db.commit()
    if not flagged:
        db.refresh(job)
        raise JobConflict(f"job {job.id} is {job.state}; only queued or running jobs can be cancelled")


# A sweep's pruner stops a running trial through the cancel path; the reason it leaves in ``error``
# (starting with this) tells the worker to end the attempt ``pruned`` rather than ``cancelled``.
PRUNE_REASON = "pruned by sweep"


def prune(db: Session, job: Job, reason: str) -> bool:
    """Stop a sweep's trial (``reason`` starts with :data:`PRUNE_REASON`): queued -> pruned at once;
    running -> flagged like a cancel, and the worker ends it ``pruned`` (:func:`stop_outcome`)."""
    if transition(db, job.id, QUEUED, PRUNED, error=reason):
        return True
    res = db.execute(update(Job).where(Job.id == job.id, Job.state == RUNNING, Job.trial_number.is_not(None))
                     .values(cancel_requested=True, error=reason[:4000]))
    db.commit()
    return res.rowcount == 1


def stop_outcome(job: Job) -> tuple[str, str]:
    """How a run stopped on request ends: (state, reason) -- ``pruned`` with the pruner's reason
    for a trial the sweep pruned, else ``cancelled``."""
    if job.trial_number is not None and (job.error or "").startswith(PRUNE_REASON):
        return PRUNED, job.error
    return CANCELLED, "cancelled by user"


def retry(db: Session, celery, settings: Settings, job: Job) -> None:
    """Run a failed or cancelled job again as attempt N+1 (same id; it resumes from the last
    attempt's checkpoint when the config is unchanged, see ``worker.runner``).

    Raises:
        JobConflict: the job is not failed/cancelled, or its teacher never produced a checkpoint.
    """
    if waits_for_teacher(job):
        raise JobConflict("its teacher job never produced a checkpoint; retry the teacher job", "parent_id")
    if job.kind == SWEEP:  # its study and children stay as they ended: a retry would end the same way
        raise JobConflict("a sweep is not retried; submit it again (a failed trial can be retried on its own)", "kind")
    retries = sum(1 for e in job.attempt_history or [] if e.get("then") == RETRIED)
    if retries >= settings.max_retries:
        raise JobConflict(f"job {job.id} was already retried {retries} times (DISTILLERY_MAX_RETRIES="
                          f"{settings.max_retries}, {job.attempt} attempts); submit it again instead", "attempt")
    if not new_attempt(db, celery, settings, job.id, RETRYABLE_STATES, job.attempt, then=RETRIED):
        db.refresh(job)
        raise JobConflict(f"job {job.id} is {job.state}; only failed or cancelled jobs can be retried")


def new_attempt(db: Session, celery, settings: Settings, job_id: int, from_states: Iterable[str], attempt: int,
                then: str = RESTARTED, outcome: str | None = None, reason: str | None = None, where: tuple = ()) -> bool:
    """Put the job back in the queue as attempt ``attempt + 1`` if it is still in ``from_states``
    at ``attempt`` (and ``where`` holds), and send its message. Used by retry, by a worker that
    stops mid-run, and by :func:`restart_or_fail`. The ending attempt's history entry says
    ``then`` (an attempt that already ended has its entry; only ``then`` is added)."""
    job = db.get(Job, job_id)
    if job is None:
        return False
    db.refresh(job)
    history = list(job.attempt_history or [])
    if history and history[-1].get("attempt") == attempt:
        history[-1] = {**history[-1], "then": then}
    else:
        history.append({**_entry(job, outcome or job.state, reason), "then": then})
    res = db.execute(update(Job).where(Job.id == job_id, Job.state.in_(tuple(from_states)), Job.attempt == attempt, *where)
                     .values(state=QUEUED, attempt=attempt + 1, updated_at=utcnow(), attempt_history=history,
                             **FRESH_ATTEMPT)
                     .execution_options(synchronize_session=False))
    db.commit()
    if res.rowcount != 1:
        return False
    enqueue(db, celery, settings, job_id)
    return True


# ---------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------
def claim(db: Session, job_id: int, attempt: int, worker: str, run_dir: str, lease_owner: str, lease_s: float) -> bool:
    """``queued -> running`` of ``attempt`` for this worker, taking the attempt's lease; False for
    a duplicate or late delivery."""
    now = utcnow()
    return transition(db, job_id, QUEUED, RUNNING, where=(Job.attempt == attempt,), started_at=now, worker=worker,
                      run_dir=run_dir, lease_owner=lease_owner, heartbeat_at=now,
                      lease_expires_at=now + timedelta(seconds=lease_s))


def finish(db: Session, job_id: int, state: str, from_states: str | Iterable[str] = IN_PROGRESS_STATES,
           error: str | None = None, lease: tuple[int, str] | None = None) -> bool:
    """End the attempt in ``state`` (a final state) with ``error`` (cut to 4000 characters) and
    record it in the attempt history. ``lease`` = (attempt, owner): only while that lease is held."""
    job = db.get(Job, job_id)
    if job is None:
        return False
    db.refresh(job)
    values: dict[str, Any] = {"pid": None, "lease_expires_at": None}
    if error is not None:
        values["error"] = error[:4000]
    if state == SUCCEEDED:
        values["progress"] = {**(job.progress or {}), "fraction": 1.0, "eta_s": 0}
    values["attempt_history"] = [*(job.attempt_history or []), _entry(job, state, error)]
    where = lease_held(*lease) if lease else (Job.attempt == job.attempt,)
    return transition(db, job_id, from_states, state, where=where, **values)


# ---------------------------------------------------------------------------------------------
# Leases: the database decides which attempt of a job runs, and which worker may write for it
# ---------------------------------------------------------------------------------------------
def lease_held(attempt: int, owner: str) -> tuple:
    """The WHERE clause of every write a worker does for an attempt: it still holds the lease."""
    return (Job.attempt == attempt, Job.lease_owner == owner, Job.state.in_(IN_PROGRESS_STATES))


def renew_lease(db: Session, job_id: int, attempt: int, owner: str, lease_s: float) -> bool:
    """The heartbeat: extend the lease if this owner still holds it. False: it was taken away
    (the attempt ended, was cancelled, or expired and was restarted) and the run must stop."""
    now = utcnow()
    res = db.execute(update(Job).where(Job.id == job_id, *lease_held(attempt, owner))
                     .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_s))
                     .execution_options(synchronize_session=False))
    db.commit()
    return res.rowcount == 1


def fence(db: Session, job_id: int, attempt: int, owner: str) -> bool:
    """Lock the job row if this owner holds the lease, without committing: the caller's writes in
    the same transaction (progress, metric points, an artifact) then commit only under the lease,
    and a reconciler taking the job over waits for that commit (or wins first and this is False)."""
    res = db.execute(update(Job).where(Job.id == job_id, *lease_held(attempt, owner)).values(updated_at=utcnow())
                     .execution_options(synchronize_session=False))
    return res.rowcount == 1


def record_launch(db: Session, job_id: int, lease: tuple[int, str], **values: Any) -> None:
    """Where the attempt runs (``pid``; for Slurm ``launcher`` and ``launcher_job_id``), written
    only under the attempt's lease; raises :class:`LeaseLostError` when it is no longer held."""
    res = db.execute(update(Job).where(Job.id == job_id, *lease_held(*lease)).values(**values)
                     .execution_options(synchronize_session=False))
    db.commit()
    if res.rowcount != 1:
        raise LeaseLostError(f"job {job_id}: lease {lease[1]} of attempt {lease[0]} is no longer held")


class LeaseLostError(RuntimeError):
    """A fenced write found the lease gone (the attempt ended, was cancelled or taken over)."""


def take_over_lease(db: Session, job_id: int, attempt: int, owner: str | None, expires: datetime | None,
                    new_owner: str, worker: str, lease_s: float) -> bool:
    """Re-attach: give the expired lease of a running attempt to ``new_owner`` for the SAME attempt
    (compare-and-set on the old owner and expiry, like :func:`lease_expired_where`), so a restarted
    worker supervises a Slurm job that outlived its worker instead of starting another. True: this
    caller won; the old owner's writes are fenced off from now on."""
    now = utcnow()
    res = db.execute(update(Job).where(Job.id == job_id, Job.attempt == attempt, Job.state == RUNNING,
                                       *lease_expired_where(owner, expires))
                     .values(lease_owner=new_owner, worker=worker, heartbeat_at=now, updated_at=now,
                             lease_expires_at=now + timedelta(seconds=lease_s))
                     .execution_options(synchronize_session=False))
    db.commit()
    return res.rowcount == 1


def expired_leases(db: Session, now: datetime | None = None) -> list[tuple[int, int, str | None, datetime | None]]:
    """(job id, attempt, lease owner, expiry) of running/exporting jobs whose lease has run out."""
    now = now or utcnow()
    rows = db.execute(select(Job.id, Job.attempt, Job.lease_owner, Job.lease_expires_at)
                      .where(Job.state.in_(IN_PROGRESS_STATES), Job.lease_expires_at.is_not(None),
                             Job.lease_expires_at < now)).all()
    return [tuple(r) for r in rows]


def restart_or_fail(db: Session, celery, settings: Settings, job_id: int, attempt: int, outcome: str, reason: str,
                    where: tuple = ()) -> str | None:
    """Attempt ``attempt`` ended without finishing the job (its lease expired, or its run crashed):
    queue attempt N+1 (it resumes from the last checkpoint) while the job has used fewer than
    ``max_attempts`` runs in a row, else fail it with ``reason`` and the history. Returns
    ``"restarted"``, ``"failed"`` or None (someone else changed the job first)."""
    job = db.get(Job, job_id)
    if job is None:
        return None
    db.refresh(job)
    runs = 1 + consecutive_restarts(job.attempt_history or [])
    if runs < job.max_attempts:
        ok = new_attempt(db, celery, settings, job_id, IN_PROGRESS_STATES, attempt, then=RESTARTED, outcome=outcome,
                         reason=reason, where=where)
        return RESTARTED if ok else None
    values = {"pid": None, "lease_expires_at": None,
              "error": (f"{reason} (gave up after {runs} attempt(s) in a row, resources.max_attempts="
                        f"{job.max_attempts}; see attempt_history)")[:4000],
              "attempt_history": [*(job.attempt_history or []), _entry(job, outcome, reason)]}
    ok = transition(db, job_id, IN_PROGRESS_STATES, FAILED, where=(Job.attempt == attempt, *where), **values)
    return FAILED if ok else None


def consecutive_restarts(history: list[dict[str, Any]]) -> int:
    """Automatic restarts since the last user action (hand-backs of a stopping worker do not count)."""
    n = 0
    for entry in reversed(history):
        if entry.get("then") == RESTARTED:
            n += 1
        elif entry.get("then") != HANDED_BACK:
            break
    return n


def lease_expired_where(owner: str | None, expires: datetime | None) -> tuple:
    """CAS for taking over an expired lease: still the same owner and expiry (no heartbeat since)."""
    return (Job.lease_owner.is_(None) if owner is None else Job.lease_owner == owner,
            Job.lease_expires_at == expires, Job.lease_expires_at < utcnow())


def iso_utc(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _entry(job: Job, outcome: str, reason: str | None) -> dict[str, Any]:
    """One attempt in ``attempt_history``."""
    return {"attempt": job.attempt, "worker": job.worker, "started_at": iso_utc(job.started_at),
            "ended_at": iso_utc(utcnow()), "outcome": outcome, "reason": (reason or None) and reason[:1000]}


def release_children(db: Session, celery, settings: Settings, parent: Job, checkpoint_artifact_id: int,
                     lease: tuple[int, str] | None = None, teacher_cache: str | None = None) -> list[int]:
    """Give waiting distill jobs their teacher's checkpoint artifact and queue them (``lease`` =
    (attempt, owner): only while the teacher's attempt still holds its lease). ``teacher_cache``:
    the name of the teacher-output cache a teacher_outputs parent wrote, which the students read."""
    released = []
    for child in list(db.scalars(select(Job).where(Job.parent_id == parent.id, Job.state == QUEUED))):
        if not waits_for_teacher(child):
            continue
        if lease and not fence(db, parent.id, *lease):
            db.rollback()
            break
        cfg = copy.deepcopy(child.config)
        cfg["teacher"]["checkpoint"] = checkpoint_artifact_id
        if teacher_cache is not None and cfg.get("distillation"):
            cfg["distillation"]["teacher_cache"] = teacher_cache
        child.config = cfg
        db.commit()
        enqueue(db, celery, settings, child.id)
        released.append(child.id)
    return released


def fail_children(db: Session, parent: Job, reason: str, state: str = FAILED) -> list[int]:
    """A teacher that ends without a checkpoint fails (or, if it was cancelled, cancels) the jobs
    waiting on it, saying why."""
    failed = []
    for child in list(db.scalars(select(Job).where(Job.parent_id == parent.id, Job.state.in_(ACTIVE_STATES)))):
        if waits_for_teacher(child) and transition(db, child.id, QUEUED, state, error=f"teacher job {parent.id} {reason}"):
            failed.append(child.id)
            failed += fail_children(db, child, reason, state)  # a teacher_outputs job's students wait on it
    return failed
