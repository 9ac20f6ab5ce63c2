"""Who this worker is: its name, its own scratch folder, and its row in the ``workers`` table.

Workers on many hosts share one database, one broker and one storage path; what is theirs alone
is their name (``DISTILLERY_WORKER_NAME``, default ``host:pid``: shown on each job it runs and
part of its leases' owner) and their scratch folder (``DISTILLERY_SCRATCH``, default
``<storage>/scratch/<name>``): the ``TMPDIR`` of the worker and of every process it starts, so no
two workers ever write temp files into the same place (a ``host:pid`` one is removed when its
process exits; a named one is kept for the next process of that name). :class:`Registry` announces the worker
(slots, GPUs, launcher, queues: ``server.routing``) and renews its row every
``server.workers.HEARTBEAT_S``, so the API can tell a job too big for every live worker from one
waiting for a busy worker; a clean stop deletes the row.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
from pathlib import Path

from server import routing, workers
from server.db import Database, database_unavailable
from server.settings import Settings

log = logging.getLogger(__name__)


def worker_name(settings: Settings) -> str:
    """``DISTILLERY_WORKER_NAME``, else ``host:pid`` of this process (the Celery worker runs its
    tasks in this same process: solo or threads pool)."""
    return settings.worker_name.strip() or f"{socket.gethostname()}:{os.getpid()}"


def scratch_dir(settings: Settings) -> Path:
    """``DISTILLERY_SCRATCH``, else ``<storage>/scratch/<worker name>`` (the name made file-safe)."""
    if settings.scratch:
        return Path(settings.scratch).resolve()
    return settings.storage_path / "scratch" / re.sub(r"[^A-Za-z0-9._-]", "_", worker_name(settings))


def use_scratch(settings: Settings) -> Path:
    """Create the scratch folder and make it this process's temp dir (``TMPDIR``, inherited by every
    run it starts, and Python's ``tempfile``)."""
    path = scratch_dir(settings)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(path)
    tempfile.tempdir = None  # recomputed from TMPDIR on next use
    if not settings.scratch and not settings.worker_name.strip():  # host:pid: no later process reuses it
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


class Registry:
    """The worker's row in ``workers``: announced at start, renewed in a daemon thread, deleted at a
    clean stop. A database outage only delays the heartbeat (the row ages out meanwhile)."""

    def __init__(self, settings: Settings, database: Database):
        self.settings, self.db = settings, database
        self.name = worker_name(settings)
        self.fields = {"host": socket.gethostname(), "slots": routing.worker_slots(settings),
                       "gpus": routing.worker_has_gpus(settings), "launcher": settings.launcher,
                       "queues": routing.queues_for_worker(settings)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="registry", daemon=True)

    def start(self) -> None:
        self._announce()
        self._thread.start()
        log.info("worker %s: %d %s per run, launcher %s, queues %s, scratch %s", self.name, self.fields["slots"],
                 "GPU(s)" if self.fields["gpus"] else "CPU slot(s)", self.fields["launcher"],
                 ",".join(self.fields["queues"]), scratch_dir(self.settings))

    def stop(self) -> None:
        """Delete the row: the worker takes no more jobs."""
        self._stop.set()
        try:
            with self.db.session() as s:
                workers.depart(s, self.name)
        except Exception as e:
            log.warning("worker %s: could not remove its row (it ages out): %s", self.name, str(e).splitlines()[0][:200])

    def _announce(self) -> bool:
        try:
            with self.db.session() as s:
                workers.announce(s, self.name, **self.fields)
            return True
        except Exception as e:
            if not database_unavailable(e):
                log.exception("worker %s: announcing failed", self.name)
            return False

    def _loop(self) -> None:
        while not self._stop.wait(workers.HEARTBEAT_S):
            try:
                with self.db.session() as s:
                    seen = workers.heartbeat(s, self.name)
                if not seen:  # deleted meanwhile (a namesake stopped): announce again
                    self._announce()
            except Exception as e:
                if not database_unavailable(e):
                    log.exception("worker %s: heartbeat failed", self.name)
