"""One attempt's hold on its job: every write under the attempt's lease, retried while the database is away.

A worker may lose an attempt at any moment (it looked dead and the job was restarted elsewhere,
or a user cancelled and the attempt ended). Every write for the attempt -- progress, metric points,
artifacts, released children, the final state -- therefore goes through this object: it is fenced
by the lease (``leases.lease_held``/``fence``), so a worker that lost the job cannot write over
the new attempt, and it raises :class:`~server.leases.LeaseLost` once the lease is gone.

The database may also go away for a while (a restart, a failover). The steps that must reach it
(:meth:`Attempt.retried`) wait for it, for up to max(300 s, 10 leases); meanwhile the heartbeat
keeps the run's lease file alive (``worker.lease``). Steps that may be skipped use :meth:`quietly`.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from server import leases, lifecycle
from server.db import Database, database_unavailable
from server.leases import LeaseLost
from server.models import Job
from server.vocabulary import CANCELLED, FAILED, IN_PROGRESS_STATES

from .lease import LeaseKeeper
from .outcome import CANCEL, StopRequest

T = TypeVar("T")


class Attempt:
    """Attempt ``number`` of job ``job_id``, held by ``owner`` while ``keeper`` renews its lease."""

    def __init__(self, database: Database, job_id: int, number: int, owner: str, keeper: LeaseKeeper,
                 logger: logging.Logger | logging.LoggerAdapter, outage_s: float, retry_every_s: float = 1.0):
        self.db, self.job_id, self.number, self.owner = database, job_id, number, owner
        self.keeper, self.log = keeper, logger
        self.lease = (number, owner)  # what lifecycle's lease functions take
        self.outage_s = outage_s  # how long a step that must reach the database waits for it
        self.retry_every_s = retry_every_s

    # -- the lease ----------------------------------------------------------------------------
    @property
    def lost(self) -> bool:
        return self.keeper.lost.is_set()

    def check(self) -> None:
        """Raise :class:`LeaseLost` once the lease is gone (the heartbeat or a fenced write saw it)."""
        if self.lost:
            raise LeaseLost()

    def lose(self) -> None:
        """A fenced write found the lease gone: stop the run (the keeper expires its lease file) and write nothing more."""
        self.keeper.lost.set()

    # -- the database, which may be away for a while -------------------------------------------
    def retried(self, fn: Callable[[Session], T], what: str = "the database") -> T:
        """``fn(session)``, retried every second while the database is unreachable; raises
        :class:`LeaseLost` (before each try) once the lease is gone."""
        deadline = time.monotonic() + self.outage_s
        told = False
        while True:
            self.check()
            try:
                with self.db.session() as s:
                    return fn(s)
            except Exception as e:
                if not database_unavailable(e) or time.monotonic() > deadline:
                    raise
                if not told:
                    self.log.warning("waiting for %s: %s", what, str(e).splitlines()[0][:200])
                    told = True
            time.sleep(self.retry_every_s)

    def quietly(self, fn: Callable[[Session], T]) -> T | None:
        """``fn(session)`` for a step that may be skipped while the database is away (then None)."""
        try:
            with self.db.session() as s:
                return fn(s)
        except Exception as e:
            if not database_unavailable(e):
                raise
            return None

    def fenced(self, s: Session) -> None:
        """Lock the job row under the lease for the writes that follow in ``s`` (they commit only
        while the lease is held); raises :class:`LeaseLost` (and stops the run) when it is not."""
        if not leases.fence(s, self.job_id, *self.lease):
            s.rollback()
            self.lose()
            raise LeaseLost()

    def confirm(self) -> None:
        """Ask the database whether the lease is still held, before a step that writes files for the
        attempt (its run, the export); raises :class:`LeaseLost` (and stops the run) when it is not.
        The heartbeat alone may not have noticed yet: a worker woken from SIGSTOP runs on at once."""
        self.retried(self.fenced, "the database to confirm the lease")

    # -- the attempt's writes ------------------------------------------------------------------
    def record_launch(self, values: dict[str, Any], must_reach: bool) -> None:
        """Where the run runs, on the job row. A Slurm job id must reach it (a restarted worker
        re-attaches by it: ``must_reach``); a pid may be skipped while the database is away."""
        try:
            (self.retried if must_reach else self.quietly)(
                lambda s: leases.record_launch(s, self.job_id, self.lease, **values))
        except LeaseLost:
            self.lose()

    def move(self, from_states: str | Iterable[str], to_state: str) -> bool:
        """A state change under the lease (``running -> exporting``); False when the state changed meanwhile."""
        return self.retried(lambda s: lifecycle.transition(s, self.job_id, from_states, to_state,
                                                           where=leases.lease_held(*self.lease)))

    def finish(self, state: str, from_states: str | Iterable[str] = IN_PROGRESS_STATES, error: str | None = None) -> bool:
        """End the attempt in ``state``; False (logged) when the state changed meanwhile or the lease is gone."""
        self.keeper.ending = True
        try:
            done = self.retried(lambda s: lifecycle.finish(s, self.job_id, state, from_states, error, lease=self.lease))
        except LeaseLost:
            done = False
        if not done:
            self.log.warning("could not move to %s (state changed meanwhile, or the lease was lost)", state)
        return done

    def restart_or_fail(self, celery, settings, reason: str) -> str | None:
        """A crashed run: a new attempt while the job has attempts left, else failed (``lifecycle.restart_or_fail``)."""
        self.keeper.ending = True
        return self.retried(lambda s: lifecycle.restart_or_fail(s, celery, settings, self.job_id, self.number, FAILED,
                                                                reason, where=leases.lease_held(*self.lease)))

    def hand_back(self, celery, settings) -> bool:
        """The worker stops mid-run: the job goes back to the queue as a new attempt (resuming from its checkpoint)."""
        self.keeper.ending = True
        try:
            return self.retried(lambda s: lifecycle.new_attempt(
                s, celery, settings, self.job_id, IN_PROGRESS_STATES, self.number, then=lifecycle.HANDED_BACK,
                outcome="worker_stopped", reason="the worker was shut down", where=leases.lease_held(*self.lease)))
        except LeaseLost:
            return False

    def release_children(self, celery, settings, checkpoint: int | str | None, teacher_cache: str | None = None) -> list[int]:
        """Queue the jobs waiting on this one with its checkpoint (and cache name), under the lease."""
        return self.retried(lambda s: lifecycle.release_children(s, celery, settings, s.get(Job, self.job_id), checkpoint,
                                                                 lease=self.lease, teacher_cache=teacher_cache))

    def fail_children(self, reason: str, state: str = FAILED) -> None:
        """The jobs waiting on this one end too, saying why (not when the lease is gone: they wait for the next attempt)."""
        try:
            failed = self.retried(lambda s: lifecycle.fail_children(s, s.get(Job, self.job_id), reason, state))
        except LeaseLost:
            return
        if failed:
            self.log.info("failed dependent jobs %s", failed)

    # -- what users asked ----------------------------------------------------------------------
    def cancel_requested(self) -> bool:
        """Whether a user (or a sweep's pruner) asked to stop the run; False while the database is away."""
        return bool(self.quietly(lambda s: s.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))))

    def stop_request(self) -> StopRequest:
        """How a run stopped on request ends: cancelled, or pruned for a trial its sweep pruned."""
        state, reason = self.quietly(lambda s: lifecycle.stop_outcome(s.get(Job, self.job_id))) or \
            (CANCELLED, "cancelled by user")
        return StopRequest(CANCEL, state=state, reason=reason)
