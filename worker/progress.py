"""A run's events into the job row while it trains: progress, metrics and metric points, under the lease.

Rank 0 appends events to ``metrics.jsonl`` (``deit_core.train``); :class:`ProgressWriter` reads
what is new on each poll (``worker.tail``) and writes it in one fenced transaction
(:meth:`worker.attempt.Attempt.fenced`). While the database is away, training goes on: the points
are kept and written, in order, once it answers again. After a validation point is stored, the
``on_val_point`` hook runs (a sweep's trial: its pruner judges each epoch as it lands).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import insert, update

from server.db import database_unavailable
from server.models import Job, MetricPoint, utcnow

from .attempt import Attempt
from .tail import MetricsTail, RunProgress

VAL_POINT = "val_top1"  # the metric a validation pass stores (what a sweep's pruner judges)


class ProgressWriter:
    """``metrics_path`` -> the attempt's job row. ``points_after``: a re-attached worker skips the
    points (steps) the earlier worker already stored."""

    def __init__(self, attempt: Attempt, metrics_path: Path, points_after: int | None = None,
                 on_val_point: Callable[[], None] | None = None):
        self.attempt = attempt
        self.reader = MetricsTail(metrics_path)
        self.tail = RunProgress()
        self.points_after = points_after
        self.on_val_point = on_val_point
        self.pending: list[dict[str, Any]] = []
        self.dirty = False  # progress not yet written
        self.db_down = False
        self.log: logging.Logger | logging.LoggerAdapter = attempt.log

    @property
    def engine_error(self) -> str | None:
        """Rank 0's error event, if the run wrote one."""
        return self.tail.error

    def update(self) -> None:
        """Read new events and write them (raises :class:`~server.leases.LeaseLost` when the lease is gone)."""
        events = self.reader.read_new()
        if events:
            points = self.tail.apply(events)
            if self.points_after is not None:  # re-attached: the earlier worker stored these already
                points = [p for p in points if p["step"] > self.points_after]
            self.pending += points
            self.dirty = True
        if not self.dirty:
            return
        new_val_point = any(p["name"] == VAL_POINT for p in self.pending)
        try:
            with self.attempt.db.session() as s:
                self._write(s)
        except Exception as e:
            if not database_unavailable(e):
                raise
            if not self.db_down:
                self.log.warning("database unavailable; training goes on, metrics are buffered (%s)",
                                 str(e).splitlines()[0][:200])
            self.db_down = True
            return
        if self.db_down:
            self.log.info("database back; wrote the buffered metrics")
            self.db_down = False
        if new_val_point and self.on_val_point is not None:
            try:
                self.on_val_point()
            except Exception:  # the reconciler advances the sweep later; training goes on
                self.log.exception("the hook after a validation point failed")

    def flush(self) -> None:
        """The run ended: the points still buffered must reach the database (waiting for it)."""
        if self.pending:
            self.attempt.retried(self._write, "the database to store the last metrics")

    def _write(self, s) -> None:
        """Progress + pending points in one transaction, under the lease."""
        self.attempt.fenced(s)
        if self.pending:
            s.execute(insert(MetricPoint), [{"job_id": self.attempt.job_id, "attempt": self.attempt.number, **p}
                                            for p in self.pending])
        s.execute(update(Job).where(Job.id == self.attempt.job_id).values(
            progress=dict(self.tail.progress), metrics=dict(self.tail.metrics), updated_at=utcnow()))
        s.commit()
        self.pending = []
        self.dirty = False
