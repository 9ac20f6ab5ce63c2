"""Leases: the database decides which attempt of a job runs, and which worker may write for it.

A running attempt holds a lease (``Job.lease_owner`` until ``Job.lease_expires_at``), renewed by
its worker's heartbeat. Every write a worker does for the attempt carries :func:`lease_held` in its
WHERE clause, so once the lease is gone (the attempt ended, was cancelled, or expired and was
restarted or taken over) the old worker's writes change nothing. Kept apart from
:mod:`server.lifecycle` (the state changes) because the worker's heartbeat, re-attach and reconciler
use these without moving a job's state. :class:`LeaseLost` is the one exception for "the lease is
gone"; the API and the worker both raise and catch it.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .models import Job, utcnow
from .vocabulary import IN_PROGRESS_STATES, RUNNING


class LeaseLost(RuntimeError):
    """A write under a lease found it gone (the attempt ended, was cancelled or taken over): the
    run must stop writing for this attempt."""


def new_lease(owner: str, lease_s: float) -> dict[str, Any]:
    """The column values of a lease taken now by ``owner`` for ``lease_s`` seconds (for a claim)."""
    now = utcnow()
    return {"lease_owner": owner, "heartbeat_at": now, "lease_expires_at": now + timedelta(seconds=lease_s)}


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
    only under the attempt's lease (``lease`` = (attempt, owner)).

    Raises:
        LeaseLost: the lease is no longer held.
    """
    res = db.execute(update(Job).where(Job.id == job_id, *lease_held(*lease)).values(**values)
                     .execution_options(synchronize_session=False))
    db.commit()
    if res.rowcount != 1:
        raise LeaseLost(f"job {job_id}: lease {lease[1]} of attempt {lease[0]} is no longer held")


def lease_expired_where(owner: str | None, expires: datetime | None) -> tuple:
    """CAS for taking over an expired lease: still the same owner and expiry (no heartbeat since)."""
    return (Job.lease_owner.is_(None) if owner is None else Job.lease_owner == owner,
            Job.lease_expires_at == expires, Job.lease_expires_at < utcnow())


def take_over_lease(db: Session, job_id: int, attempt: int, owner: str | None, expires: datetime | None,
                    new_owner: str, worker: str, lease_s: float) -> bool:
    """Re-attach: give the expired lease of a running attempt to ``new_owner`` for the SAME attempt
    (compare-and-set on the old owner and expiry, like :func:`lease_expired_where`), so a restarted
    worker supervises a Slurm job that outlived its worker instead of starting another. True: this
    caller won; the old owner's writes are fenced off from now on."""
    now = utcnow()
    res = db.execute(update(Job).where(Job.id == job_id, Job.attempt == attempt, Job.state == RUNNING,
                                       *lease_expired_where(owner, expires))
                     .values(worker=worker, updated_at=now, **new_lease(new_owner, lease_s))
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
