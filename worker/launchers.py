"""What the runner supervises: a local process group or a Slurm job, behind one small interface.

``JobRunner._supervise`` polls a handle, stops it on cancel or a lost lease, and records where it
runs on the job row; it does not care how the run was started. :class:`LocalRun` wraps the
torchrun/exporter ``Popen`` of :mod:`worker.launch`; ``worker.slurm.SlurmRun`` is a Slurm batch
job. ``detachable``: a stopping worker may leave the run alone for the next worker to re-attach
(only a Slurm job: a local run dies with its worker by design).
"""
from __future__ import annotations

import logging
import subprocess

from . import launch


class LocalRun:
    """A process group on this host started by :func:`worker.launch.start`."""

    detachable = False

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def row_values(self) -> dict[str, object]:
        return {"pid": self.proc.pid}

    def describe(self) -> str:
        return f"process group {self.proc.pid}"

    def poll(self) -> int | None:
        return self.proc.poll()

    def ended_reason(self) -> str | None:
        return None

    def stop(self, grace_s: float, logger: logging.Logger | logging.LoggerAdapter) -> int:
        return launch.stop(self.proc, grace_s, logger)
