"""The reconciler: every worker checks, every few seconds, that the database and the queue agree.

Messages are acked early (``server.queue``), so the job row, not the message, is the record of
the work. The reconciler makes that record self-healing, whichever host or broker went away:

(a) a running/exporting job whose lease has expired (its worker or host is gone) is restarted as a
    new attempt, or failed once it has used ``max_attempts`` (``lifecycle.restart_or_fail``);
(b) a queued job whose message may have been lost (sent longer than ``requeue_after_s`` ago and
    not in the broker's queue: a Redis restart without persistence, a worker that died between
    taking the message and claiming the job) is sent again; the claim's compare-and-set makes a
    duplicate delivery harmless;
(c) every running sweep is advanced (``worker.sweep.advance``: its trials reported, pruned, told,
    new ones asked). Sweeps hold no lease (no expiry), so (a) never restarts one;
(d) a finished baseline group with no stored comparison gets one (``worker.comparison.fill_missing``):
    its last run may have ended here, in (a), or by its teacher's failure, with no delivery to compute it.

Database outages: a lease is judged expired only after this reconciler has *seen* the same
expired lease (same owner, same expiry) for half a lease in sweeps that reached the database, and
any sweep that cannot reach it forgets what it saw. A healthy worker whose heartbeats failed only
because the database was down retries every second, so it renews its lease within about a second
of the database's return, long before anyone may take the job over; a worker that is really gone
is restarted after lease_s + lease_s/2 + one sweep. Leases held by this very process (by job and
owner; an owner names the worker *process*, ``worker.lease.lease_owner``, so a worker restarted under
its predecessor's name judges the leases that one left) are never judged. A job restarted or failed
here has the files its dead attempt linked but never registered removed (``worker.artifacts.sweep_strays``).
Clocks of the hosts are assumed to agree (NTP) to well within a lease.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Callable

from celery import Celery
from sqlalchemy import or_, select, update

from server import leases, lifecycle
from server.db import Database, database_unavailable
from server.models import Job, utcnow
from server.serializers import iso_utc
from server.settings import Settings
from server.vocabulary import QUEUED

from . import comparison
from . import sweep as sweep_driver
from .artifacts import sweep_strays
from .lease import LocalLeases

log = logging.getLogger(__name__)


class Reconciler:
    """Runs :meth:`sweep` in a daemon thread every ``interval`` seconds (+-20% jitter)."""

    def __init__(self, celery: Celery, settings: Settings, database: Database, local: LocalLeases,
                 reattach: Callable[..., bool] | None = None):
        self.celery, self.settings, self.db, self.local = celery, settings, database, local
        # An expired lease of a Slurm job is first offered here (worker.reattach.SlurmReattach): True
        # when it re-attached to the still-known Slurm job (or left it to a Slurm worker).
        self.reattach = reattach
        self.interval = max(0.5, min(5.0, settings.lease_s / 3))
        self.seen: dict[tuple, float] = {}  # expired lease -> when this reconciler first saw it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("reconciler started (every ~%.1fs; lease %.0fs, re-send after %.0fs)", self.interval,
                 self.settings.lease_s, self.settings.requeue_after_s)

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval * random.uniform(0.8, 1.2)):
            try:
                self.sweep()
            except Exception as e:
                self.seen.clear()  # what was seen before an outage says nothing about after it
                if database_unavailable(e):
                    log.debug("reconciler: database unavailable: %s", e)
                else:
                    log.exception("reconciler sweep failed")

    def sweep(self) -> dict[str, list[int]]:
        """One pass; returns what it did (``restarted``, ``failed``, ``resent``)."""
        done: dict[str, list[int]] = {"restarted": [], "failed": [], "resent": []}
        self._expire_leases(done)
        self._resend_lost(done)
        done["sweeps"] = sweep_driver.advance_all(self.celery, self.settings, self.db)  # (c) sweeps go on
        done["compared"] = comparison.fill_missing(self.db)  # (d) gains whose group ended without a delivery
        return done

    # (a) -------------------------------------------------------------------------------------
    def _expire_leases(self, done: dict[str, list[int]]) -> None:
        with self.db.session() as s:
            rows = leases.expired_leases(s)
        now = time.monotonic()
        current = {row for row in rows if (row[0], row[2]) not in self.local}  # (job id, owner) held here
        self.seen = {key: t for key, t in self.seen.items() if key in current}
        for key in current:
            first = self.seen.setdefault(key, now)
            if now - first < self.settings.lease_s / 2:
                continue
            job_id, attempt, owner, expires = key
            if self.reattach is not None and self.reattach(job_id, attempt, owner, expires):
                self.seen.pop(key, None)
                continue
            reason = (f"attempt {attempt}'s lease ({owner}) expired at {iso_utc(expires)} without a heartbeat: "
                      f"its worker or host stopped")
            with self.db.session() as s:
                outcome = lifecycle.restart_or_fail(s, self.celery, self.settings, job_id, attempt, "lease_expired",
                                                    reason, where=leases.lease_expired_where(owner, expires))
                swept = sweep_strays(s, self.settings.artifacts_path, job_id) if outcome else []
            self.seen.pop(key, None)
            if swept:
                log.warning("job %s: removed %d file(s) attempt %d left unregistered: %s", job_id, len(swept), attempt,
                            [str(f) for f in swept])
            if outcome:
                log.warning("job %s: %s; %s", job_id, reason, "queued a new attempt" if outcome == lifecycle.RESTARTED
                            else "failed (no attempts left)")
                done["restarted" if outcome == lifecycle.RESTARTED else "failed"].append(job_id)

    # (b) -------------------------------------------------------------------------------------
    def _resend_lost(self, done: dict[str, list[int]]) -> None:
        cutoff = utcnow() - timedelta(seconds=self.settings.requeue_after_s)
        with self.db.session() as s:
            jobs = list(s.scalars(select(Job).where(Job.state == QUEUED,
                                                    or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff))))
            candidates = [(j.id, j.task_id, j.enqueued_at) for j in jobs if not lifecycle.waits_for_teacher(j)]
        if not candidates:
            return
        try:
            in_broker = broker_messages(self.settings)
        except Exception as e:  # the broker is down: nothing can be sent now anyway
            log.debug("reconciler: broker unavailable: %s", e)
            return
        for job_id, task_id, sent_at in candidates:
            with self.db.session() as s:
                # CAS on the old send time: of all reconcilers, exactly one acts on this job now.
                where = Job.enqueued_at.is_(None) if sent_at is None else Job.enqueued_at == sent_at
                res = s.execute(update(Job).where(Job.id == job_id, Job.state == QUEUED, where)
                                .values(enqueued_at=utcnow()).execution_options(synchronize_session=False))
                s.commit()
                if res.rowcount != 1:
                    continue
                if task_id and in_broker is not None and task_id.encode() in in_broker:
                    continue  # still waiting in the queue: not lost, just behind other jobs
                try:
                    lifecycle.enqueue(s, self.celery, self.settings, job_id)
                except Exception as e:
                    s.rollback()
                    s.execute(update(Job).where(Job.id == job_id).values(enqueued_at=sent_at))
                    s.commit()
                    log.warning("job %s: could not re-send its message: %s", job_id, e)
                    continue
            log.warning("job %s: queued since %s and its message %s is not in the broker; sent it again",
                        job_id, iso_utc(sent_at), task_id)
            done["resent"].append(job_id)


def broker_messages(settings: Settings) -> bytes | None:
    """Every message waiting in (or reserved from) this deployment's queue, as one blob to search
    for task ids; None when the transport cannot be inspected (then lost-looking jobs are re-sent)."""
    url = settings.broker_url
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
        try:
            keys = [k for k in client.scan_iter(f"{settings.queue}*") if client.type(k) == b"list"]
            blobs = [m for k in keys for m in client.lrange(k, 0, -1)]
            blobs += client.hvals("unacked") if client.exists("unacked") else []
        finally:
            client.close()
        return b"\n".join(blobs)
    if url.startswith("filesystem"):
        folder = Path(settings.broker_transport_options()["data_folder_in"])
        return b"\n".join(_read(p) for p in folder.glob("*.msg"))
    return None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # taken by a worker meanwhile
        return b""
