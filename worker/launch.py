"""Starting and stopping run processes: torchrun for training, the exporter, each in its own session.

Every child runs with ``start_new_session=True`` so the worker can signal the whole process
group. torchrun itself starts its ranks in new sessions too, so :func:`stop` also signals every
descendant it can find (psutil), first SIGTERM, then SIGKILL after the grace period: a cancel
leaves no training process behind.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psutil

from deit_core.local_ranks import die_with_parent

log = logging.getLogger(__name__)


def train_args(config_path: Path, run_dir: Path, resume: bool = False, extra: tuple[str, ...] = ()) -> list[str]:
    """``deit_core.train``'s arguments, the same under every launcher (local torchrun or Slurm)."""
    return ["--config", str(config_path), "--output", str(run_dir)] + (["--resume"] if resume else []) + list(extra)


def train_command(config_path: Path, run_dir: Path, processes: int, resume: bool = False,
                  extra: tuple[str, ...] = ()) -> list[str]:
    """``torchrun --standalone`` picks a free rendezvous port, so parallel runs never clash."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "deit_core.train", *train_args(config_path, run_dir, resume, extra)]


@dataclass(frozen=True)
class TrainSpec:
    """One attempt's training, as data: every launcher builds its command line from this."""

    job_id: int
    attempt: int
    run_dir: Path
    config_path: Path
    nodes: int = 1
    processes_per_node: int = 1
    resume: bool = False
    extra_args: tuple[str, ...] = ()  # e.g. the teacher-output cache store and cap

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node

    def train_args(self) -> list[str]:
        return train_args(self.config_path, self.run_dir, self.resume, self.extra_args)


def export_command(final_dir: Path, out_dir: Path, val_dir: str | None, extra: tuple[str, ...] = (),
                   error_file: Path | None = None) -> list[str]:
    """``distillery export``; on failure it writes its reason as JSON to ``error_file``."""
    cmd = [sys.executable, "-m", "distillery", "export", "--model", str(final_dir), "--output", str(out_dir)]
    if error_file is not None:
        cmd += ["--error-file", str(error_file)]
    if val_dir:
        cmd += ["--val", val_dir]
    return cmd + list(extra)


def child_env(gpus: tuple[str, ...], processes: int) -> dict[str, str]:
    """The run's environment: this worker's GPUs only (or none: the engine then uses gloo on CPU)."""
    env = dict(os.environ)
    if gpus:
        if processes > len(gpus):
            raise ValueError(f"resources.processes={processes} but this worker has {len(gpus)} GPU(s) "
                             f"(DISTILLERY_WORKER_GPUS={','.join(gpus)})")
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[:processes])
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("OMP_NUM_THREADS", "1" if processes > 1 else str(max(1, (os.cpu_count() or 1))))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_command_line(log_path: Path, cmd: list[str]) -> None:
    """The run's log starts each launch with the command it ran, as a shell would show it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())


def start(cmd: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """Start ``cmd`` in a new session with stdout and stderr appended to ``log_path``; it dies
    with the worker (:func:`deit_core.local_ranks.die_with_parent`)."""
    write_command_line(log_path, cmd)
    with open(log_path, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=str(cwd), start_new_session=True,
                                preexec_fn=partial(die_with_parent, os.getpid()))


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal_all(procs: list[psutil.Process], pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop(proc: subprocess.Popen, grace_s: float, logger: logging.Logger | logging.LoggerAdapter = log) -> int:
    """SIGTERM the process group and all descendants, SIGKILL what is left after ``grace_s``.

    ``logger`` is the caller's (the job's) logger, so these records carry the job id too."""
    procs = _tree(proc.pid)
    _signal_all(procs, proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while True:
        proc.poll()  # reap our direct child so it does not linger as a zombie
        known = {p.pid: p for p in procs}
        for c in _tree(proc.pid)[1:]:
            known.setdefault(c.pid, c)
        procs = [p for p in known.values() if _alive(p)]
        if not procs or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if procs:
        logger.warning("processes %s ignored SIGTERM for %.0fs; killing", [p.pid for p in procs], grace_s)
        _signal_all(procs, proc.pid, signal.SIGKILL)
        psutil.wait_procs(procs, timeout=5)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
