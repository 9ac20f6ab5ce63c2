"""The worker's side of a job lease: heartbeats, the run's lease file, and waiting out an earlier attempt.

While an attempt runs, :class:`LeaseKeeper` renews its lease in the database every ``lease_s / 3``
(``server.leases.renew_lease``, a compare-and-set on owner + attempt) and mirrors it into the
run directory's ``lease.json``, which the training loop checks (``deit_core.lease``). A renewal the
database refuses means the lease was taken away (the attempt was cancelled, ended, or restarted
elsewhere after this worker looked dead): :attr:`LeaseKeeper.lost` is set and the lease file is
expired at once, so the run stops. A renewal that fails because the database is unreachable is
not a lost lease: the worker is healthy, so it keeps the file alive and keeps trying (every
second) until the database answers; see the reconciler for why others do not take the job meanwhile.

:func:`wait_for_earlier_attempts` is the other half of "never two attempts at once": a new attempt
starts training only after every earlier attempt's lease file has expired and no process of an
earlier attempt is alive on this host.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import psutil

from deit_core.lease import read_lease_file, write_lease_file
from server import leases
from server.db import Database, database_unavailable

from .run_contract import attempt_dir_name

log = logging.getLogger(__name__)


def process_token(pid: int | None = None) -> str:
    """``<pid>.<start time in ms>`` of this process: unique on its host across restarts (a pid is
    reused only by a process started later), so two processes of one worker name never share it."""
    pid = os.getpid() if pid is None else pid
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:  # cannot happen for a live process; a clock reading still tells restarts apart
        started = time.time()
    return f"{pid}.{int(started * 1000)}"


def lease_owner(worker: str, attempt: int) -> str:
    """The owner of attempt ``attempt``'s lease taken by this process: ``<worker>/<pid>.<start ms>#<attempt>``.

    Unique per worker *process*, not per worker name: a worker restarted under the same
    ``DISTILLERY_WORKER_NAME`` is another owner, so its reconciler judges (and takes over) the expired
    lease its dead predecessor left, and its writes never pass its predecessor's fence (and back)."""
    return f"{worker}/{process_token()}#{attempt}"


class LocalLeases:
    """The leases (job id, owner) this worker process holds now; its reconciler never judges those.
    Keyed by job too: one process may hold attempt 1 of two jobs (a threads pool), under one owner."""

    def __init__(self) -> None:
        self._held: set[tuple[int, str]] = set()
        self._lock = threading.Lock()

    def add(self, job_id: int, owner: str) -> None:
        with self._lock:
            self._held.add((job_id, owner))

    def discard(self, job_id: int, owner: str) -> None:
        with self._lock:
            self._held.discard((job_id, owner))

    def __contains__(self, lease: object) -> bool:
        with self._lock:
            return lease in self._held


class LeaseKeeper:
    """Heartbeats for one attempt's lease, in a thread, from :meth:`start` to :meth:`stop`."""

    def __init__(self, database: Database, job_id: int, attempt: int, owner: str, lease_s: float, run_dir: Path,
                 local: LocalLeases | None = None, logger: logging.Logger | logging.LoggerAdapter = log,
                 file_grace_s: float = 0.0):
        self.db, self.job_id, self.attempt, self.owner = database, job_id, attempt, owner
        self.lease_s, self.run_dir, self.local, self.log = lease_s, Path(run_dir), local, logger
        self.lost = threading.Event()
        self.ending = False  # set by the runner before it ends the attempt: a refused renewal is then expected
        # How long the lease file outlives the database lease: 0 for a local run (it dies with the
        # worker); longer for a Slurm job, which outlives its worker until the next one re-attaches
        # (worker.slurm.lease_file_grace_s). keep_file: leave the file as it is at stop (detached).
        self.file_grace_s = file_grace_s
        self.keep_file = False
        self.db_down_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id}-{attempt}", daemon=True)

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_file(time.time() + self.lease_s + self.file_grace_s)
        if self.local is not None:
            self.local.add(self.job_id, self.owner)
        self._thread.start()

    def stop(self) -> None:
        """End the heartbeats and expire the lease file (the attempt's processes are already gone)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if not self.keep_file:
            self._write_file(time.time())
        if self.local is not None:
            self.local.discard(self.job_id, self.owner)

    def _write_file(self, expires_at: float) -> None:
        try:
            write_lease_file(self.run_dir, self.owner, expires_at)
        except OSError as e:  # storage trouble must not kill the heartbeat; the DB lease still rules
            self.log.warning("could not write the lease file in %s: %s", self.run_dir, e)

    def renew(self) -> bool:
        """One heartbeat. False once the lease is lost (then the file is expired too)."""
        try:
            with self.db.session() as s:
                held = leases.renew_lease(s, self.job_id, self.attempt, self.owner, self.lease_s)
        except Exception as e:
            if not database_unavailable(e):
                self.log.exception("heartbeat failed")
            elif self.db_down_since is None:
                self.db_down_since = time.monotonic()
                self.log.warning("heartbeat: database unavailable (%s); training goes on, retrying every second",
                                 str(e).splitlines()[0][:200])
            self._write_file(time.time() + self.lease_s + self.file_grace_s)  # this worker is alive: its run may go on
            return True
        if self.db_down_since is not None:
            self.log.info("heartbeat: database back after %.0fs; lease renewed: %s",
                          time.monotonic() - self.db_down_since, held)
            self.db_down_since = None
        if not held:
            if self.ending:
                self.lost.set()
                self._write_file(0.0)
                return False
            self.log.warning("lease %s lost (the job was cancelled, ended, or restarted elsewhere); stopping the run",
                             self.owner)
            self.lost.set()
            self._write_file(0.0)
            return False
        self._write_file(time.time() + self.lease_s + self.file_grace_s)
        return True

    def _loop(self) -> None:
        while True:
            interval = 1.0 if self.db_down_since is not None else self.lease_s / 3
            if self._stop.wait(min(interval, self.lease_s / 3)):
                return
            if not self.renew():
                return


def command_line(cmdline: list[str]) -> str:
    """A process's command line as one string. A warm-started run (``worker.warm_start``) names
    itself with setproctitle, which writes one string padded with NULs: psutil returns it as one
    argument followed by empty ones, so arguments cannot be compared one by one."""
    return " ".join(arg for arg in cmdline if arg)


def names_path(cmdline: list[str], path: Path | str) -> bool:
    """Whether ``cmdline`` names ``path``, or a file under it, as a whole word (not a prefix of
    another folder: ``attempt-1`` is not ``attempt-10``)."""
    pattern = r"(?:^|\s)" + re.escape(str(path)) + r"(?:/\S*)?(?=\s|$)"
    return re.search(pattern, command_line(cmdline)) is not None


def attempt_processes(run_dir: Path) -> list[psutil.Process]:
    """Processes on this host whose command line names ``run_dir`` (torchrun or the warm-start
    leader, the ranks, the exporter)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
        except psutil.Error:
            continue
        if names_path(cmd, run_dir):
            found.append(p)
    return found


def wait_for_earlier_attempts(job_root: Path, attempt: int, lease_s: float, should_stop: Callable[[], bool],
                              logger: logging.Logger | logging.LoggerAdapter = log, poll_s: float = 0.5) -> None:
    """Block until no earlier attempt of this job can still be training: each earlier attempt's
    lease file has expired (plus a third of a lease, so a rank between two lease checks gets there)
    and none of its processes is alive on this host. Processes still alive a whole lease after
    their lease ran out are stale (their lease is gone from the database) and are killed."""
    for earlier in range(attempt - 1, 0, -1):
        run_dir = job_root / attempt_dir_name(earlier)
        lease = read_lease_file(run_dir)
        deadline = (lease["expires_at"] if lease else 0.0) + lease_s / 3
        told = False
        while not should_stop():
            procs = attempt_processes(run_dir)
            now = time.time()
            if now >= deadline and not procs:
                break
            if not told:
                logger.info("waiting for attempt %d to stop (lease file expires in %.0fs, %d process(es) left)",
                            earlier, max(0.0, deadline - now), len(procs))
                told = True
            if procs and now >= deadline + lease_s:
                logger.warning("attempt %d's processes %s outlived its lease; killing them", earlier,
                               [p.pid for p in procs])
                for p in procs:
                    try:
                        p.send_signal(signal.SIGKILL)
                    except psutil.Error:
                        pass
            time.sleep(poll_s)
