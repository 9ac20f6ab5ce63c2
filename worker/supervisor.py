"""Keeping `distillery up`'s worker child alive: restart it when it dies, with backoff.

The API must not go down because the worker did (a crash, an OOM kill, a `kill -9`): the job rows
are the durable record, so a restarted worker picks up where the dead one left off (its start-up
sweep marks the jobs it owned). Restarts back off from ``min_delay_s`` doubling to ``max_delay_s``
so a worker that dies at once (say, a broken config) does not spin; after ``healthy_after_s`` of
uptime the delay starts again at ``min_delay_s``.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from typing import Callable

log = logging.getLogger(__name__)


class WorkerSupervisor:
    """Starts ``cmd`` in its own session and restarts it whenever :meth:`check` finds it dead."""

    def __init__(self, cmd: list[str], min_delay_s: float = 1.0, max_delay_s: float = 30.0,
                 healthy_after_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 report: Callable[[str], None] = log.warning):
        self.cmd, self.min_delay_s, self.max_delay_s, self.healthy_after_s = cmd, min_delay_s, max_delay_s, healthy_after_s
        self.clock, self.report = clock, report
        self.proc: subprocess.Popen | None = None
        self.delay_s = min_delay_s
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, start_new_session=True)
        self.started_at = self.clock()
        self.restart_at = None

    def check(self) -> None:
        """Notice a dead worker and schedule its restart; start it once the delay has passed."""
        now = self.clock()
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.start()
                self.restarts += 1
                self.report(f"worker restarted (pid {self.proc.pid}, restart {self.restarts})")
            return
        if self.proc is None or self.proc.poll() is None:
            return
        if now - self.started_at >= self.healthy_after_s:
            self.delay_s = self.min_delay_s
        self.report(f"worker pid {self.proc.pid} exited with code {self.proc.returncode} after "
                    f"{now - self.started_at:.0f}s; restarting it in {self.delay_s:.0f}s")
        self.restart_at = now + self.delay_s
        self.delay_s = min(self.delay_s * 2, self.max_delay_s)

    def stop(self, grace_s: float) -> None:
        """SIGTERM (warm shutdown: a running job is stopped and re-queued), SIGKILL after ``grace_s``."""
        self.restart_at = None
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
