"""One launcher interface -- start, poll, stop, re-attach -- with a local and a Slurm implementation.

The runner describes what to train as data (:class:`TrainSpec`: the run directory, the config
file, resume or not, nodes and processes per node, extra engine arguments) and asks the deployment's
launcher (:func:`launcher_for`) to ``start`` it; it gets back a :class:`Run` it can ``poll`` and
``stop`` without caring how the run was started. ``reattach`` gives the handle of a run an earlier
worker started (only a Slurm job outlives its worker). Both launchers run the same training:
``deit_core.train`` with :func:`worker.launch.train_args`.

- :class:`LocalLauncher`: torchrun on this host (:mod:`worker.launch`), one node; the exporter too,
  whatever the launcher (it needs one process and the run's files).
- ``worker.slurm.SlurmLauncher``: an sbatch script, srun + torchrun per node.

``detachable``: a stopping worker may leave the run alone for the next worker to re-attach (only a
Slurm job: a local run dies with its worker by design).
"""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Protocol

from server.settings import Settings
from server.vocabulary import LOCAL, SLURM

from . import launch, warm_start
from .launch import TrainSpec
from .run_contract import OUTPUT_LOG
from .slurm import SlurmLauncher

log = logging.getLogger(__name__)
Logger = logging.Logger | logging.LoggerAdapter


class Run(Protocol):
    """A started run, whoever started it."""

    detachable: bool

    def poll(self) -> int | None: ...  # None while it runs, then its exit code

    def stop(self, grace_s: float, logger: Logger) -> int: ...  # stop every process of it; the exit code

    def describe(self) -> str: ...  # for the log: "process group 123", "Slurm job 45"

    def row_values(self) -> dict[str, object]: ...  # where it runs, for the job row (lifecycle.record_launch)

    def ended_reason(self) -> str | None: ...  # the launcher's words for a run that did not complete


class Launcher(Protocol):
    name: str

    def start(self, spec: TrainSpec, logger: Logger) -> Run: ...

    def reattach(self, launcher_job_id: str) -> Run: ...

    def lease_file_grace_s(self) -> float: ...  # how long the run's lease file outlives the database lease


class LocalRun:
    """A process group on this host started by :func:`worker.launch.start`."""

    detachable = False

    def __init__(self, proc: subprocess.Popen | warm_start.WarmProcess):
        self.proc = proc

    def row_values(self) -> dict[str, object]:
        return {"pid": self.proc.pid}

    def describe(self) -> str:
        return f"process group {self.proc.pid}"

    def poll(self) -> int | None:
        return self.proc.poll()

    def ended_reason(self) -> str | None:
        return None

    def stop(self, grace_s: float, logger: Logger = log) -> int:
        return launch.stop(self.proc, grace_s, logger)


class LocalLauncher:
    """Runs on this host with this worker's GPUs (``gpus``; none: CPU processes with gloo): forked
    by the worker's warm server (``warm``, :mod:`worker.warm_start`) when it has one that is ready,
    else torchrun (cold: every rank imports torch again)."""

    name = LOCAL

    def __init__(self, gpus: tuple[str, ...] = (), cwd: Path | None = None,
                 warm: warm_start.WarmStarter | None = None, grace_s: float = 10.0):
        self.gpus = tuple(gpus)
        self.cwd = cwd or Path.cwd()
        self.warm, self.grace_s = warm, grace_s

    def start(self, spec: TrainSpec, logger: Logger = log) -> LocalRun:
        env = launch.child_env(self.gpus, spec.processes_per_node)
        if spec.nodes > 1:  # torchrun --standalone would shrink the world
            raise ValueError(f"resources.nodes={spec.nodes} needs a worker with the Slurm launcher "
                             "(DISTILLERY_LAUNCHER=slurm); this worker runs on one host")
        log_path = spec.run_dir / OUTPUT_LOG
        if self.warm is not None:
            argv = spec.train_args()
            try:
                launch.write_command_line(log_path, ["(warm start)", "deit_core.local_ranks",
                                                     f"--nproc={spec.processes_per_node}", "--", *argv])
                proc = self.warm.spawn(argv, spec.processes_per_node, env, self.cwd, log_path, self.grace_s)
                logger.info("training (warm start, leader pid %s): %s", proc.pid, " ".join(argv))
                return LocalRun(proc)
            except warm_start.WarmStartUnavailable as e:
                logger.warning("warm start unavailable (%s); starting torchrun", e)
        cmd = launch.train_command(spec.config_path, spec.run_dir, spec.processes_per_node, spec.resume, spec.extra_args)
        logger.info("training: %s", " ".join(cmd))
        return self.run_command(cmd, log_path, env)

    def run_command(self, cmd: list[str], log_path: Path, env: dict[str, str]) -> LocalRun:
        """Any command as a run on this host (the exporter), its output appended to ``log_path``."""
        return LocalRun(launch.start(cmd, log_path, env, cwd=self.cwd))

    def reattach(self, launcher_job_id: str) -> LocalRun:
        raise ValueError(f"a local run dies with its worker; there is no process {launcher_job_id} to re-attach to")

    def lease_file_grace_s(self) -> float:
        return 0.0  # the run dies with its worker (PR_SET_PDEATHSIG), its lease file with the database lease


def launcher_for(settings: Settings) -> Launcher:
    """The deployment's launcher (``DISTILLERY_LAUNCHER``)."""
    if settings.launcher == SLURM:
        return SlurmLauncher(settings)
    return LocalLauncher(settings.worker_gpus, warm=warm_start.shared() if settings.warm_start else None,
                         grace_s=float(settings.cancel_grace_s))
