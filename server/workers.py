"""The ``workers`` table: each worker process announces itself (name, host, slots, GPUs, launcher,
queues) and renews ``last_seen_at`` every few seconds; the API reads it to say why a queued job
waits. Written by ``worker.registry``; the API never asks a worker anything directly.

A worker is *live* while it was seen in the last :data:`LIVE_S` seconds. One that stops cleanly
deletes its row; one that dies leaves it to age out. Its jobs are not judged from here: leases
(``worker.lease``, ``worker.reconciler``) decide those.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import routing
from .models import Job, Worker, utcnow, waits_for_teacher
from .vocabulary import QUEUED

HEARTBEAT_S = 5.0  # how often a worker renews last_seen_at
LIVE_S = 30.0  # a worker not seen for this long is not counted as able to take jobs


def announce(db: Session, name: str, **fields: Any) -> None:
    """Insert or update this worker's row (``fields``: host, slots, gpus, launcher, queues) and
    mark it seen now; ``started_at`` is reset, since a new process is starting."""
    now = utcnow()
    values = {**fields, "started_at": now, "last_seen_at": now}
    if db.execute(update(Worker).where(Worker.name == name).values(**values)).rowcount == 0:
        db.add(Worker(name=name, **values))
        try:
            db.flush()
        except IntegrityError:  # another process announced the same name in between: take the row
            db.rollback()
            db.execute(update(Worker).where(Worker.name == name).values(**values))
    db.commit()


def heartbeat(db: Session, name: str) -> bool:
    """Renew ``last_seen_at``; False when the row is gone (deleted by a namesake's clean stop)."""
    done = db.execute(update(Worker).where(Worker.name == name).values(last_seen_at=utcnow())).rowcount == 1
    db.commit()
    return done


def depart(db: Session, name: str) -> None:
    """A clean stop: the worker no longer takes jobs."""
    db.execute(delete(Worker).where(Worker.name == name))
    db.commit()


@dataclass(frozen=True)
class Capacity:
    """What the live workers can take, read once per API request."""

    workers: int = 0  # live workers
    single: int = 0  # the most slots any live worker gives a one-node run
    multi: int = 0  # the most slots per node a live Slurm worker gives a multi-node run (0: none live)
    gpus: bool = False  # whether any live worker has GPUs (the unit of the waiting reason)


def live_capacity(db: Session, now: datetime | None = None) -> Capacity:
    cutoff = (now or utcnow()) - timedelta(seconds=LIVE_S)
    rows = db.execute(select(Worker.slots, Worker.launcher, Worker.gpus).where(Worker.last_seen_at >= cutoff)).all()
    return Capacity(workers=len(rows), single=max((r.slots for r in rows), default=0),
                    multi=max((r.slots for r in rows if r.launcher == routing.SLURM), default=0),
                    gpus=any(r.gpus for r in rows))


def _slots(n: int, gpus: bool | None) -> str:
    """``4 GPUs``, ``1 CPU slot``; ``gpus`` None (no live worker to tell): ``4 GPUs or CPU slots``."""
    one = {True: "GPU", False: "CPU slot", None: "GPU or CPU slot"}[gpus]
    many = {True: "GPUs", False: "CPU slots", None: "GPUs or CPU slots"}[gpus]
    return f"{n} {one if n == 1 else many}"


def waiting_reason(job: Job, capacity: Capacity) -> str | None:
    """Why a queued job has not started, in words (None for a job that is not queued): its
    teacher job has not finished, no live worker is big enough (or none is up), or every worker
    that fits is busy."""
    if job.state != QUEUED:
        return None
    if waits_for_teacher(job):
        return f"waiting for job {job.parent_id} (its teacher) to finish"
    nodes, per_node = routing.job_shape(job.config or {})
    if nodes > 1:
        if capacity.multi >= per_node:
            return "waiting for a free worker"
        unit = _slots(per_node, capacity.gpus if capacity.workers else None)
        return f"waiting for a Slurm worker with {unit} per node ({nodes} nodes)"
    if capacity.single >= per_node:
        return "waiting for a free worker"
    if capacity.workers == 0:
        need = "" if per_node == 1 else f" with {_slots(per_node, None)}"
        return f"waiting for a worker{need}: no worker is running"
    return f"waiting for a worker with {_slots(per_node, capacity.gpus)}"
