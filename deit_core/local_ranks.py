"""N ranks of ``deit_core.train`` on this host, forked from one interpreter that has the imports done.

torchrun (``python -m torch.distributed.run``) imports torch, then starts every rank as a fresh
Python that imports torch, timm and the engine again: seconds on a small machine, paid by each
rank before its first step. The worker's warm start (``worker.warm_start``) keeps one interpreter
with those imports done and forks a *leader* per run, which calls :func:`lead`. The leader forks
the ranks; each sets the environment torchrun sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``, ...) and calls the engine's entry point directly. The leader does
what torchrun's agent does on one node: when a rank fails it stops the others (SIGTERM, SIGKILL after
``grace_s``), prints torchrun's failure summary (``worker.rank_failure`` reads it) and exits with the
ranks' exit code (so a bad config is still exit 2, an expired lease 75). A rank dies with its leader
and the leader with its parent (``PR_SET_PDEATHSIG``); a SIGTERM to the leader reaches every rank.

``python -m deit_core.local_ranks --nproc N -- --config FILE --output DIR`` runs the same from a
cold interpreter (what the tests compare with torchrun).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass

from .layout import LAUNCHER_VARIABLE

SUMMARY_RULE = "=" * 60


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """Ask the kernel for ``sig`` when this process's parent (pid ``parent``) dies, even by SIGKILL
    (Linux ``PR_SET_PDEATHSIG``); the ``preexec_fn`` of the worker's children and the first step of
    every forked leader and rank. Elsewhere a no-op: the run's lease file (``deit_core.lease``)
    still stops it within a lease.

    A parent that died between fork and prctl has left this process re-parented, so its parent is
    no longer ``parent``: exit at once. (Not "is 1": a worker that is itself pid 1, as
    ``distillery worker`` is as a container's command, would see every run exit 1 at birth.)"""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    if os.getppid() != parent:
        os._exit(1)


def free_port() -> int:
    """A free TCP port on the loopback for rank 0's store (torchrun --standalone picks one the same way)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """What torchrun puts in a rank's environment on one node (the engine and Accelerate read these)."""
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
            "GROUP_RANK": "0", "ROLE_RANK": str(rank), "ROLE_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_MAX_RESTARTS": "0",
            LAUNCHER_VARIABLE: "deit_core.local_ranks"}


def apply_thread_count() -> None:
    """OpenMP read ``OMP_NUM_THREADS`` when torch was imported (in the warm interpreter, with its
    environment); a forked rank sets the count its own environment asks for."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        import torch

        torch.set_num_threads(int(threads))


def set_title(title: str | None = None) -> None:
    """Name this process as ``ps`` shows it: a forked rank would otherwise show the warm server's
    command line, and nothing (an operator, ``pkill -f deit_core.train``) could tell the run. With no
    ``title``, only prepare: setproctitle must find the process's original environment block, so
    the warm server calls this before a child replaces ``os.environ``."""
    try:
        import setproctitle
    except ImportError:  # a missing optional nicety must not stop a run
        return
    if title is None:
        setproctitle.getproctitle()
    else:
        setproctitle.setproctitle(title)


def _run_rank(rank: int, world: int, port: int, argv: list[str], leader: int) -> int:
    die_with_parent(leader)
    os.environ.update(rank_env(rank, world, port))
    set_title(" ".join([sys.executable, "-m", "deit_core.train", *argv, f"(rank {rank} of {world})"]))
    apply_thread_count()
    from .train import main

    return main(argv)


def _rank_child(rank: int, world: int, port: int, argv: list[str], leader: int) -> None:
    """The forked rank: run, then leave without running the leader's exit handlers."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        code = _run_rank(rank, world, port, argv, leader)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - a rank must never return into the leader's code
        traceback.print_exc()
    finally:
        exit_forked(code)


def exit_forked(code: int) -> None:
    """Leave a forked child with ``code``: flush its output, skip the parent's exit handlers and
    ``finally`` blocks (``os._exit``), which must not run twice."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed log must not keep the exit code from the parent
            pass
    os._exit(code)


@dataclass
class RankExit:
    rank: int
    pid: int
    exitcode: int  # negative: killed by that signal (as subprocess reports it)
    time: float

    def summary(self, host: str) -> list[str]:
        sig = ""
        tb = "<N/A>"
        if self.exitcode < 0:
            name = signal.Signals(-self.exitcode).name
            sig = f"  ({name})"
            tb = f"Signal {-self.exitcode} ({name}) received by PID {self.pid}"
        return [f"  time      : {time.strftime('%Y-%m-%d_%H:%M:%S', time.localtime(self.time))}",
                f"  host      : {host}",
                f"  rank      : {self.rank} (local_rank: {self.rank})",
                f"  exitcode  : {self.exitcode} (pid: {self.pid}){sig}",
                "  error_file: <N/A>",
                f"  traceback : {tb}"]


def failure_summary(failures: list[RankExit], what: str = "deit_core.train") -> str:
    """torchrun's summary of a failed run: every failed rank, then the first one as the root cause."""
    host = socket.gethostname()
    root, others = failures[0], failures[1:]
    lines = [SUMMARY_RULE, f"{what} FAILED", "-" * 60, "Failures:"]
    if not others:
        lines.append("  <NO_OTHER_FAILURES>")
    for i, f in enumerate(others, start=1):
        lines += [f"[{i}]:", *f.summary(host)]
    lines += ["-" * 60, "Root Cause (first observed failure):", "[0]:", *root.summary(host), SUMMARY_RULE]
    return "\n".join(lines)


class Leader:
    """The ranks of one run and what the leader knows of them: alive, failed, being stopped."""

    def __init__(self, ranks: dict[int, int], grace_s: float):
        self.ranks, self.grace_s = ranks, grace_s
        self.alive = set(ranks)
        self.failures: list[RankExit] = []
        self.deadline: float | None = None  # when the ranks being stopped get SIGKILL

    def signal_ranks(self, sig: int = signal.SIGTERM) -> None:
        for pid in list(self.alive):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop_ranks(self, sig: int = signal.SIGTERM) -> None:
        """``sig`` to every rank left, SIGKILL after ``grace_s``."""
        self.signal_ranks(sig)
        if self.deadline is None:
            self.deadline = time.monotonic() + self.grace_s

    def on_signal(self, signum, _frame) -> None:
        """The worker stops the run: pass the signal on and wait for the ranks."""
        self.stop_ranks(signum)

    def kill_if_overdue(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            print(f"ranks {sorted(self.ranks[p] for p in self.alive)} ignored SIGTERM for {self.grace_s:.0f}s; "
                  "killing", file=sys.stderr, flush=True)
            self.signal_ranks(signal.SIGKILL)
            self.deadline = float("inf")

    def ended(self, pid: int, status: int) -> None:
        self.alive.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            self.failures.append(RankExit(self.ranks[pid], pid, code, time.time()))
            if self.alive:  # one rank failed: the others cannot finish
                self.stop_ranks()

    def wait(self, poll_s: float) -> int:
        while self.alive:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                self.kill_if_overdue()
                time.sleep(poll_s)
            elif pid in self.alive:
                self.ended(pid, status)
        if not self.failures:
            return 0
        print(failure_summary(self.failures), file=sys.stderr, flush=True)
        root = self.failures[0].exitcode
        return root if root > 0 else 1


def lead(argv: list[str], nprocs: int, grace_s: float = 10.0, poll_s: float = 0.05) -> int:
    """Fork ``nprocs`` ranks of ``deit_core.train`` with ``argv`` and wait for them (the module
    docstring); returns the exit code for the run."""
    if nprocs < 1:
        raise ValueError(f"nprocs must be at least 1, got {nprocs}")
    port = free_port()  # one process too: Accelerate starts a process group from these variables, as under torchrun
    set_title(" ".join([sys.executable, "-m", "deit_core.local_ranks", f"--nproc={nprocs}", "--", *argv]))
    sys.stdout.flush()
    sys.stderr.flush()
    ranks: dict[int, int] = {}
    me = os.getpid()
    for rank in range(nprocs):
        pid = os.fork()
        if pid == 0:
            _rank_child(rank, nprocs, port, argv, me)
        ranks[pid] = rank
    leader = Leader(ranks, grace_s)
    signal.signal(signal.SIGTERM, leader.on_signal)
    signal.signal(signal.SIGINT, leader.on_signal)
    return leader.wait(poll_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deit_core.local_ranks",
                                description="Run N ranks of deit_core.train on this host (torchrun's job, one import).")
    p.add_argument("--nproc", type=int, default=1, help="ranks on this host")
    p.add_argument("--grace-s", type=float, default=10.0, help="SIGTERM -> SIGKILL for ranks left when one fails")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then deit_core.train's arguments")
    args = p.parse_args(argv)
    rest = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    import deit_core.train  # noqa: F401 - the imports every rank shares, done once before forking

    return lead(rest, args.nproc, args.grace_s)


if __name__ == "__main__":
    sys.exit(main())
