"""The job life cycle, in one place: create, queue, claim, finish, cancel, prune, retry, a new attempt.

State only moves through :func:`transition`, an ``UPDATE ... WHERE id = :id AND state IN (...)``:
whoever changes the row first wins, so a Celery message delivered twice, a cancel racing a start,
or two workers racing each other can never run a job twice or resurrect a finished one. The API
and the worker both call the functions below; neither writes ``Job.state`` itself. Leases (which
worker may write for an attempt) are :mod:`server.leases`; every job these create comes from a
:class:`server.job_spec.JobSpec`. A job's ``stop_reason`` (``server.vocabulary.STOP_REASONS``) is
written here whenever it stops or is asked to stop; settings come in as arguments.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import quotas, routing
from .job_spec import JobSpec
from .leases import fence, lease_held, new_lease
from .models import Job, User, utcnow, waits_for_teacher
from .serializers import iso_utc
from .settings import Settings
from .vocabulary import (
    ACTIVE_STATES,
    CANCELLED,
    FAILED,
    FINAL_STATES,
    IN_PROGRESS_STATES,
    LEASE_LOST,
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
                 "launcher": None, "launcher_job_id": None,  # a re-attach must never find the last attempt's Slurm job
                 "stop_reason": None}
# How an attempt was followed (``then`` in its history entry): the service started the next one on
# its own (counts against ``max_attempts``), a user retried, or a stopping worker handed it back.
RESTARTED, RETRIED, HANDED_BACK = "restarted", "retried", "handed_back"
# The outcome of an attempt whose lease ran out without a heartbeat (``worker.reconciler``); a job
# that ends failed after it has stop_reason lease_lost.
LEASE_EXPIRED = "lease_expired"
# The stop_reason a final state gets unless the caller says otherwise (a success has none).
STOP_REASON_OF = {SUCCEEDED: None, FAILED: FAILED, CANCELLED: CANCELLED, PRUNED: PRUNED}


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
    e.g. :func:`server.leases.lease_held`, holds); commit. A final state also sets ``finished_at``
    and ``stop_reason`` (:data:`STOP_REASON_OF`) unless ``values`` name them.

    Returns:
        True if this caller made the change (exactly one caller can win).
    """
    states = (from_states,) if isinstance(from_states, str) else tuple(from_states)
    values = {"state": to_state, "updated_at": utcnow(), **values}
    if to_state in FINAL_STATES:
        values.setdefault("finished_at", utcnow())
        values.setdefault("stop_reason", STOP_REASON_OF[to_state])
    res = db.execute(update(Job).where(Job.id == job_id, Job.state.in_(states), *where).values(**values)
                     .execution_options(synchronize_session=False))
    db.commit()
    return res.rowcount == 1


# ---------------------------------------------------------------------------------------------
# Creating and queueing
# ---------------------------------------------------------------------------------------------
def create_jobs(db: Session, user: User, specs: Iterable[JobSpec], settings: Settings | None = None) -> list[Job]:
    """Insert validated specs (:func:`server.job_requests.validate_request`) in one transaction; a
    spec's parent (and baseline, and replicate primary) given by index is a job created earlier in the same call.
    With ``settings``, under the user's cap on jobs in flight: counted and inserted under one lock
    (:func:`server.quotas.reserve`; raises ``quotas.QuotaExceeded``, nothing written)."""
    specs = list(specs)
    if settings is not None:
        quotas.reserve(db, settings, user, quotas.slots_needed(specs))
    jobs: list[Job] = []
    for spec in specs:
        job = Job(kind=spec.kind, name=spec.name, config=spec.config, owner_id=user.id,
                  state=QUEUED, attempt=1, progress={}, metrics={}, attempt_history=[],
                  max_attempts=int((spec.config.get("resources") or {}).get("max_attempts", 3)),
                  priority=spec.priority, trial_number=spec.trial_number, seeds=spec.seeds)
        if spec.parent is not None:
            job.parent_id = spec.parent.job_id if spec.parent.index is None else _earlier(jobs, spec.parent.index).id
        if spec.baseline_of is not None:  # the same student without a teacher (submissions.baseline_spec)
            job.baseline_of = _earlier(jobs, spec.baseline_of).id
        if spec.replicate_of is not None:  # seed k > 0 of a ``seeds: N`` submission (submissions.replicate_specs)
            job.replicate_of = _earlier(jobs, spec.replicate_of).id
        db.add(job)
        db.flush()
        jobs.append(job)
    db.commit()
    return jobs


def _earlier(jobs: list[Job], index: int) -> Job:
    if not 0 <= index < len(jobs):
        raise ValueError(f"a job spec refers to spec {index}, which is not created before it")
    return jobs[index]


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


def send_or_leave_queued(db: Session, celery, settings: Settings, job_id: int) -> bool:
    """:func:`enqueue`; False when the broker cannot take the message now (a Redis restart, an
    outage). The job then stays ``queued`` with no send time, which the reconciler in every worker
    reads as a lost message and sends on its next pass (``worker.reconciler``, (b)): the row, not
    the message, is the record of the work, so a broker outage delays a job and never fails it."""
    try:
        enqueue(db, celery, settings, job_id)
        return True
    except Exception as e:  # noqa: BLE001 - whatever the transport raises, the row is what counts
        db.rollback()
        log.warning("job %s: the broker cannot take its message now (%s); it stays queued and the reconciler "
                    "sends it", job_id, str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
        db.execute(update(Job).where(Job.id == job_id, Job.state == QUEUED).values(enqueued_at=None))
        db.commit()
        return False


def submit(db: Session, celery, settings: Settings, user: User, specs: list[JobSpec]) -> list[Job]:
    """Create the jobs and queue those that can start. A broker that cannot take a message leaves
    its job queued for the reconciler (:func:`send_or_leave_queued`); ``Job.enqueued_at`` is None
    on those until it is sent. Over the user's cap: ``quotas.QuotaExceeded``, nothing created."""
    jobs = create_jobs(db, user, specs, settings)
    for job in jobs:
        if not waits_for_teacher(job):
            send_or_leave_queued(db, celery, settings, job.id)
    return jobs


# ---------------------------------------------------------------------------------------------
# User actions
# ---------------------------------------------------------------------------------------------
def cancel(db: Session, celery, job: Job, by: str, settings: Settings | None = None) -> None:
    """Queued: cancelled at once (the message is revoked when ``settings.broker_broadcasts``; a late
    delivery finds the state changed). Running/exporting: flag the row (``stop_reason`` cancelled);
    the worker supervising it stops the process group and ends it cancelled (:func:`stop_outcome`).
    ``settings`` None (``worker.sweep`` until it passes its own): no revoke, which is only an
    optimisation (the claim CAS already makes the message a no-op) and may pile up files on a broker
    without broadcasts.

    Raises:
        JobConflict: the job has already ended.
    """
    if transition(db, job.id, QUEUED, CANCELLED, error=f"cancelled by {by}"):
        if job.task_id and settings is not None and settings.broker_broadcasts:
            try:
                celery.control.revoke(job.task_id)
            except Exception:  # revoke is an optimisation; the CAS already made the message a no-op
                log.warning("job %s: revoke of %s failed", job.id, job.task_id, exc_info=True)
        fail_children(db, job, "was cancelled", state=CANCELLED)
        return
    flagged = db.execute(update(Job).where(Job.id == job.id, Job.state.in_(IN_PROGRESS_STATES))  # a CAS too: a
                         .values(cancel_requested=True, stop_reason=CANCELLED)).rowcount == 1  # worker may just have claimed it
    db.commit()
    if not flagged:
        db.refresh(job)
        raise JobConflict(f"job {job.id} is {job.state}; only queued or running jobs can be cancelled")


# How the pruner's human-readable reason starts (``worker.sweep`` writes it into ``error``); nothing
# reads it back: ``stop_reason`` pruned is what makes the worker end the attempt pruned.
PRUNE_REASON = "pruned by sweep"


def prune(db: Session, job: Job, reason: str) -> bool:
    """Stop a sweep's trial with ``reason`` (shown in ``error``): queued -> pruned at once; running
    -> flagged like a cancel with ``stop_reason`` pruned, and the worker ends it pruned
    (:func:`stop_outcome`). False for a job that is not a running or queued trial."""
    if transition(db, job.id, QUEUED, PRUNED, where=(Job.trial_number.is_not(None),), error=reason[:4000]):
        return True
    res = db.execute(update(Job).where(Job.id == job.id, Job.state == RUNNING, Job.trial_number.is_not(None))
                     .values(cancel_requested=True, stop_reason=PRUNED, error=reason[:4000]))
    db.commit()
    return res.rowcount == 1


def stop_outcome(job: Job) -> tuple[str, str]:
    """How a run stopped on request ends: (state, reason) -- ``pruned`` with the pruner's reason
    when its ``stop_reason`` says the sweep pruned it, else ``cancelled``."""
    if job.stop_reason == PRUNED:
        return PRUNED, job.error or "pruned by its sweep"
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
    send_or_leave_queued(db, celery, settings, job_id)  # the new attempt is queued, sent now or by the reconciler
    return True


# ---------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------
def claim(db: Session, job_id: int, attempt: int, worker: str, run_dir: str, lease_owner: str, lease_s: float) -> bool:
    """``queued -> running`` of ``attempt`` for this worker, taking the attempt's lease; False for
    a duplicate or late delivery."""
    lease = new_lease(lease_owner, lease_s)
    return transition(db, job_id, QUEUED, RUNNING, where=(Job.attempt == attempt,), started_at=lease["heartbeat_at"],
                      worker=worker, run_dir=run_dir, **lease)


def finish(db: Session, job_id: int, state: str, from_states: str | Iterable[str] = IN_PROGRESS_STATES,
           error: str | None = None, lease: tuple[int, str] | None = None) -> bool:
    """End the attempt in ``state`` (a final state) with ``error`` (cut to 4000 characters) and
    record it in the attempt history; ``stop_reason`` follows the state (:data:`STOP_REASON_OF`).
    ``lease`` = (attempt, owner): only while that lease is held."""
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


def restart_or_fail(db: Session, celery, settings: Settings, job_id: int, attempt: int, outcome: str, reason: str,
                    where: tuple = ()) -> str | None:
    """Attempt ``attempt`` ended without finishing the job (its lease expired, or its run crashed):
    queue attempt N+1 (it resumes from the last checkpoint) while the job has used fewer than
    ``max_attempts`` runs in a row, else fail it with ``reason`` and the history (``stop_reason``
    lease_lost after an expired lease, :data:`LEASE_EXPIRED`, else failed). Returns
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
              "attempt_history": [*(job.attempt_history or []), _entry(job, outcome, reason)],
              "stop_reason": LEASE_LOST if outcome == LEASE_EXPIRED else FAILED}
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
        send_or_leave_queued(db, celery, settings, child.id)  # released either way: a broker outage only delays it
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
