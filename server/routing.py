"""Which queue a job goes to, which queues a worker consumes, and how priorities reach the broker.

A run needs a number of GPUs (or, on a CPU worker, process slots) on one host: its processes per
node. Each size has its own queue, and a worker consumes only the queues of the sizes it can give
one run (``DISTILLERY_WORKER_SLOTS``), so a 4-GPU job is never taken by a 2-GPU worker: it waits
in its queue (and in ``queued``, with the reason, see ``server.workers``) until a worker that fits
is up. Multi-node jobs have queues of their own that only Slurm workers consume. Nothing here
decides *where* a run is placed beyond that: Celery + Redis deliver, Slurm places multi-node runs.

Queue names all start with ``DISTILLERY_QUEUE`` (the reconciler finds every message of the
deployment by that prefix): ``Q`` for one process (the queue of every earlier release), ``Q.p4``
for 4 processes on one node, ``Q.slurm.p4`` for several nodes of 4 processes each.

Priorities: the broker hands out higher-priority messages first. Redis (kombu) keeps one list per
priority step and pops the *lowest* number first (the reverse of AMQP); the embedded filesystem
broker (``server.fs_broker``) follows the same convention, so one mapping serves both.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from .settings import Settings
from .vocabulary import DEFAULT_PRIORITY, SLURM

# Broker priority numbers: lower is delivered first (Redis/kombu convention, also server.fs_broker's).
BROKER_PRIORITY = {"high": 0, "normal": 4, "low": 9}


def job_shape(config: Mapping[str, Any]) -> tuple[int, int]:
    """(nodes, processes per node) a job asks for: ``resources.nodes`` x ``processes_per_node``,
    or the one-node spelling ``resources.processes``. Read defensively: stored configs of older
    releases have no ``nodes``/``processes_per_node``."""
    res = config.get("resources") or {}
    nodes = _positive(res.get("nodes"), 1)
    per_node = res.get("processes_per_node")
    return nodes, _positive(per_node if per_node is not None else res.get("processes"), 1)


def _positive(value: Any, default: int) -> int:
    try:
        return max(1, int(value)) if value is not None and not isinstance(value, bool) else default
    except (TypeError, ValueError):
        return default


def queue_name(settings: Settings, processes: int, multi_node: bool = False) -> str:
    """The queue of runs of ``processes`` per node (``multi_node``: on more than one node)."""
    if multi_node:
        return f"{settings.queue}.{SLURM}.p{processes}"
    return settings.queue if processes == 1 else f"{settings.queue}.p{processes}"


def queue_for(settings: Settings, config: Mapping[str, Any]) -> str:
    """The queue a job's run message goes to (used by ``lifecycle.enqueue``, so re-sends too)."""
    nodes, per_node = job_shape(config)
    return queue_name(settings, per_node, multi_node=nodes > 1)


def worker_slots(settings: Settings) -> int:
    """GPUs (or CPU process slots) this worker gives one run, per node for a Slurm worker.

    ``DISTILLERY_WORKER_SLOTS`` when set (a local GPU worker never more than its
    ``DISTILLERY_WORKER_GPUS``); else a Slurm worker's ``DISTILLERY_SLURM_GPUS_PER_NODE``, a GPU
    worker's number of GPUs, and a CPU worker one gloo process per core (``os.cpu_count()``): CPU
    runs of more processes than cores only thrash.
    """
    gpus = len(settings.worker_gpus)
    if settings.worker_slots > 0:
        slots = settings.worker_slots
        return min(slots, gpus) if gpus and settings.launcher != SLURM else slots
    if settings.launcher == SLURM and settings.slurm_gpus_per_node > 0:
        return settings.slurm_gpus_per_node
    return gpus or max(1, os.cpu_count() or 1)


def worker_has_gpus(settings: Settings) -> bool:
    return bool(settings.worker_gpus) or (settings.launcher == SLURM and settings.slurm_gpus_per_node > 0)


def queues_for_worker(settings: Settings) -> list[str]:
    """The queues a worker consumes (``celery worker -Q``): every run size up to its slots (and
    the deployment's ``DISTILLERY_MAX_PROCESSES``), largest first; a Slurm worker also takes the
    multi-node queues, before the others, since no other worker can."""
    top = max(1, min(worker_slots(settings), settings.max_processes))
    sizes = range(top, 0, -1)
    queues = [queue_name(settings, p) for p in sizes]
    if settings.launcher == SLURM:
        queues = [queue_name(settings, p, multi_node=True) for p in sizes] + queues
    return queues


def broker_priority(priority: str | None) -> int:
    """The broker's number for a job priority (unknown or missing: normal)."""
    return BROKER_PRIORITY.get(priority or DEFAULT_PRIORITY, BROKER_PRIORITY[DEFAULT_PRIORITY])


def transport_priority_options(settings: Settings) -> dict[str, Any]:
    """Redis transport options so priorities are honoured: one list per priority step, popped
    lowest number first across every queue a worker consumes; among queues of one step, the
    worker's own order (largest runs first) instead of round robin."""
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return {"priority_steps": sorted(set(BROKER_PRIORITY.values())), "queue_order_strategy": "priority"}
    return {}
