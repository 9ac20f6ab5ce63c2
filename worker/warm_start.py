"""Warm start: one interpreter per worker with torch, timm and the engine imported, forking each run.

A cold local run is ``torchrun``: a new Python imports torch, then every rank imports torch, timm
and the engine again, 2-10 s on a small machine before the first step, for every job. The worker
instead starts this module once (``python -m worker.warm_start --fd N``, the *warm server*): it
imports :data:`PRELOAD` and then waits on a socket. For each run the worker sends one JSON line
(argv, process count, environment, working directory, log file); the server forks a leader that
calls :func:`deit_core.local_ranks.lead`, which forks the ranks. The server reports the leader's
pid, and its exit code when it ends; :class:`WarmProcess` is the worker's ``subprocess.Popen``-like
handle, so ``worker.launch.stop`` and the supervisor treat warm and cold runs alike.

The guarantees of a cold run hold: the leader starts a new session (its own process group, which
``stop`` signals), stdout and stderr go to the run's log, and it dies with the server which dies
with the worker (``PR_SET_PDEATHSIG`` at each step, and the server exits when the worker's end of
the socket closes); the engine's lease file still stops a run whose lease ran out. Nothing runs in
the server itself: it only imports and forks, single-threaded, so a fork copies no held lock; it
must not initialise CUDA (a forked child could not use it), which :func:`cuda_initialised` checks
after the imports: then the server refuses to serve and the worker's runs start cold.
"""
from __future__ import annotations

import argparse
import importlib
import itertools
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from functools import partial
from pathlib import Path

import psutil

from deit_core.local_ranks import die_with_parent, exit_forked, set_title

log = logging.getLogger(__name__)

# What every run imports before its first step (deit_core.train pulls in the engine, data, models).
PRELOAD = ("torch", "torchvision", "timm", "accelerate", "deit_core.train", "deit_core.local_ranks")
READY_TIMEOUT_S = 600.0  # the server's imports on a loaded 2-core machine, with room
KILLED_WITH_SERVER = -signal.SIGTERM  # a run whose server died got SIGTERM from the kernel


# --------------------------------------------------------------------------------------- the server

def cuda_initialised() -> bool:
    """Whether this process has loaded the CUDA driver (``libcuda``): after a fork the child
    could not use it, so the server must not serve then."""
    try:
        with open(f"/proc/{os.getpid()}/maps") as f:
            return any("libcuda.so" in line for line in f)
    except OSError:
        return False


def _send(sock: socket.socket, message: dict) -> None:
    sock.sendall((json.dumps(message) + "\n").encode())


def _child(request: dict, closing: list[int], server: int) -> None:
    """The forked leader: its own session, the run's log and environment, then the ranks."""
    code = 1
    try:
        for fd in closing:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        die_with_parent(server)
        out = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.close(null)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        from deit_core.local_ranks import lead

        code = lead(list(request["argv"]), int(request["nprocs"]), float(request.get("grace_s", 10.0)))
    except BaseException:  # noqa: BLE001 - a leader must never return into the server's loop
        traceback.print_exc()
    finally:
        exit_forked(code)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"pid": pid, "returncode": os.waitstatus_to_exitcode(status)})


def serve(fd: int) -> int:
    """The warm server's loop (the module docstring); returns when the worker's end closes."""
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started = time.monotonic()
    try:
        for name in PRELOAD:
            importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - the worker starts its runs cold and says why
        _send(sock, {"ready": False, "reason": f"importing {name} failed: {type(e).__name__}: {e}"})
        return 1
    if cuda_initialised():
        _send(sock, {"ready": False, "reason": "an import initialised CUDA; forked runs could not use it"})
        return 1
    set_title()  # before a child replaces os.environ, or its ranks could not be named
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    _send(sock, {"ready": True, "imports_s": round(time.monotonic() - started, 3), "pid": os.getpid()})
    buffer = b""
    server_pid = os.getpid()
    while True:
        try:
            readable, _, _ = select.select([sock, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        _reap(sock)
        if sock not in readable:
            continue
        data = sock.recv(1 << 16)
        if not data:
            return 0  # the worker is gone; our runs get SIGTERM from the kernel as we exit
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                _child(request, [sock.fileno(), wake_r, wake_w], server_pid)
            _send(sock, {"id": request["id"], "pid": pid})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worker.warm_start", description="distillery's warm run server.")
    p.add_argument("--fd", type=int, required=True, help="the socket inherited from the worker")
    return serve(p.parse_args(argv).fd)


# --------------------------------------------------------------------------------------- the worker's side

class WarmStartUnavailable(RuntimeError):
    """The warm server cannot start this run (not ready, refused, or gone); start it cold."""


class WarmProcess:
    """A run forked by the warm server, with the parts of ``subprocess.Popen`` the worker uses."""

    def __init__(self, server: "WarmStarter", pid: int):
        self.server, self.pid = server, pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"warm run {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class WarmStarter:
    """The worker's handle on its warm server: started once, restarted after it died."""

    def __init__(self, python: str = sys.executable, ready_timeout_s: float = READY_TIMEOUT_S):
        self.python, self.ready_timeout_s = python, ready_timeout_s
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._state = "stopped"  # stopped -> starting -> ready | refused; gone when it died
        self._reason = ""
        self._pids: dict[int, int] = {}  # request id -> pid
        self._exits: dict[int, int] = {}  # pid -> exit code
        self._running: set[int] = set()
        self.imports_s: float | None = None

    @property
    def state(self) -> str:
        return self._state

    def start(self) -> None:
        """Start the server (it imports in the background); a no-op while one is starting or ready."""
        with self._cond:
            if self._state in ("starting", "ready"):
                return
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            env = {**os.environ, "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
            self._proc = subprocess.Popen([self.python, "-m", "worker.warm_start", "--fd", str(theirs.fileno())],
                                          pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
                                          start_new_session=True, preexec_fn=partial(die_with_parent, os.getpid()))
            theirs.close()
            self._sock, self._state, self._reason = ours, "starting", ""
            threading.Thread(target=self._read, args=(ours,), name="warm-start-reader", daemon=True).start()
        log.info("warm start: server pid %s importing %s", self._proc.pid, ", ".join(PRELOAD))

    def _read(self, sock: socket.socket) -> None:
        buffer = b""
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self._on_message(json.loads(line))
        with self._cond:
            if self._sock is sock and self._state != "refused":  # a refusal keeps its state and reason
                self._state = "gone"
                self._reason = self._reason or "the warm server exited"
            self._cond.notify_all()

    def _on_message(self, msg: dict) -> None:
        with self._cond:
            if "ready" in msg:
                self._state = "ready" if msg["ready"] else "refused"
                self._reason = msg.get("reason", "")
                self.imports_s = msg.get("imports_s")
                if msg["ready"]:
                    log.info("warm start: server ready (imports took %.1fs)", self.imports_s or 0.0)
                else:
                    log.warning("warm start off: %s", self._reason)
            elif "id" in msg:
                self._pids[msg["id"]] = msg["pid"]
                self._running.add(msg["pid"])
            elif "returncode" in msg:
                self._exits[msg["pid"]] = msg["returncode"]
                self._running.discard(msg["pid"])
            self._cond.notify_all()

    def exit_code(self, pid: int) -> int | None:
        """The run's exit code once it ended; None while it runs. A run whose server died was sent
        SIGTERM by the kernel: once its process is gone it reads as killed by SIGTERM."""
        with self._cond:
            if pid in self._exits:
                return self._exits.pop(pid)
            if self._state in ("ready", "starting"):
                return None
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:
            pass
        return KILLED_WITH_SERVER

    def spawn(self, argv: list[str], nprocs: int, env: dict[str, str], cwd: Path, log_path: Path,
              grace_s: float = 10.0) -> WarmProcess:
        """Fork a run of ``deit_core.train`` with ``argv`` on ``nprocs`` ranks; raises
        :class:`WarmStartUnavailable` when the server cannot (start the run cold then)."""
        self.start()
        with self._lock:  # one request at a time on the socket
            with self._cond:
                ready = self._cond.wait_for(lambda: self._state != "starting", timeout=self.ready_timeout_s)
                if not ready or self._state != "ready":
                    reason = self._reason or f"not ready after {self.ready_timeout_s:.0f}s"
                    if self._state == "gone":
                        self._state = "stopped"  # the next run starts a new server
                    raise WarmStartUnavailable(reason)
                request_id = next(self._ids)
                sock = self._sock
            try:
                _send(sock, {"id": request_id, "argv": argv, "nprocs": nprocs, "env": env, "cwd": str(cwd),
                             "log": str(log_path), "grace_s": grace_s})
            except OSError as e:
                raise WarmStartUnavailable(f"the warm server is gone: {e}") from e
            with self._cond:
                if not self._cond.wait_for(lambda: request_id in self._pids or self._state != "ready", timeout=60):
                    raise WarmStartUnavailable("the warm server did not answer within 60s")
                if request_id not in self._pids:
                    raise WarmStartUnavailable(self._reason or "the warm server is gone")
                return WarmProcess(self, self._pids.pop(request_id))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close our end (the server exits; its runs get SIGTERM) and wait for it."""
        with self._cond:
            sock, proc, self._sock, self._state = self._sock, self._proc, None, "stopped"
        if sock is not None:
            sock.close()
        if proc is not None:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


_shared: WarmStarter | None = None
_shared_lock = threading.Lock()


def shared() -> WarmStarter:
    """This worker process's one warm server (started by the worker when it is ready, or by its first run)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = WarmStarter()
        return _shared


if __name__ == "__main__":
    sys.exit(main())
