"""Fault tests: a private PostgreSQL cluster and private redis-servers that the tests may stop,
restart and wipe, plus a small stack (API + real `distillery worker` processes) on them.

Nothing here is shared with other sessions: the PostgreSQL cluster and each redis-server live in
temp folders on free ports. Under ``CI=true`` missing binaries fail the tests instead of skipping.
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import sqlalchemy

from server.cli import free_port
from tests.helpers import RestClient, wait_healthy, wait_until
from tests.service.conftest import TRAIN, distillery, new_token, stop, unavailable, write_digits
from worker import lease as worker_lease

# Untrained 32 px models on 50 val images: the parity gate is not what these tests are about.
EXPORT_ARGS = "--no-pte --latency-runs 1 --max-drop 100"


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


class PrivatePostgres:
    """initdb + pg_ctl in a temp dir on a free port (run as the ``postgres`` user when we are root)."""

    def __init__(self, bindir: Path, root: Path):
        self.bindir, self.root, self.port = bindir, root, free_port()
        self.data = root / "data"
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = list(cmd)
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        if self.user:
            os.chown(self.root, pwd.getpwnam(self.user).pw_uid, pwd.getpwnam(self.user).pw_gid)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"), "-o", opts,
                  "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def url(self, name: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self) -> str:
        import psycopg

        name = f"faults_{secrets.token_hex(4)}"
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def private_pg():
    bindir = pg_bin()
    if bindir is None or not (bindir / "initdb").exists():
        unavailable("initdb/pg_ctl not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="distillery-pg-", dir="/tmp"))
    pg = PrivatePostgres(bindir, root)
    try:
        pg.init()
    except subprocess.CalledProcessError as e:
        unavailable(f"could not start a private PostgreSQL: {e.stderr or e.stdout}")
    yield pg
    pg.stop()
    shutil.rmtree(root, ignore_errors=True)


class PrivateRedis:
    """A redis-server with no persistence in a temp dir; :meth:`restart` loses every key, as the
    production machine's Redis does."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, free_port(), None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        import redis

        wait_until(lambda: _ping(redis, self.url), 20, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, down_s: float = 1.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


def _ping(redis, url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


@pytest.fixture
def private_redis(tmp_path):
    if shutil.which("redis-server") is None:
        unavailable("redis-server not installed")
    r = PrivateRedis(tmp_path)
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("faults-data") / "digits", per_class_train=20, per_class_val=5)


def job_config(data: Path, epochs: int = 2, max_attempts: int = 3, **train) -> dict:
    """A small teacher job (one process, 32 px digits): the cheapest real training run there is."""
    return {"kind": "teacher", "data": {"train": f"{data}/train", "val": f"{data}/val", "img_size": 32},
            "teacher": {"model": "regnety_002"}, "train": {**TRAIN, "epochs": epochs, **train},
            "resources": {"processes": 1, "max_attempts": max_attempts}}


@dataclass
class Stack(RestClient):
    """An API and any number of real workers on one database and broker."""

    env: dict
    root: Path
    database_url: str
    url: str = ""
    token: str = ""
    procs: list = field(default_factory=list)
    workers: list = field(default_factory=list)

    def start_api(self, port: int | None = None) -> subprocess.Popen:
        """gunicorn on ``port`` (default a free one; the same one again after a kill)."""
        port = port or free_port()
        log = open(self.root / "api.log", "ab")
        api = subprocess.Popen([sys.executable, "-m", "distillery", "serve", "--port", str(port), "--workers", "1"],
                               env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(api)
        self.url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{self.url}/api/v1/health", api, timeout=90, describe=lambda: self.log("api"))
        self.token = self.token or new_token("alice", self.env)
        return api

    def start_worker(self, name: str = "worker", **env: str) -> subprocess.Popen:
        """A ``distillery worker`` logging to ``<name>.log``; ``env`` on top of the stack's (e.g.
        ``DISTILLERY_WORKER_NAME``: a worker restarted under its old name)."""
        log = open(self.root / f"{name}.log", "ab")
        w = subprocess.Popen([sys.executable, "-m", "distillery", "worker"], env={**self.env, **env}, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(w)
        self.workers.append(w)
        return w

    def log(self, name: str, n: int = 40) -> str:
        path = self.root / f"{name}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return f"--- {name}.log ---\n" + "\n".join(lines[-n:])

    def logs(self) -> str:
        return "\n".join(self.log(p.stem) for p in sorted(self.root.glob("*.log")))

    api_timeout = 30
    wait_timeout = 300

    def run_dir(self, job_id: int, attempt: int) -> Path:
        return Path(self.env["DISTILLERY_STORAGE"]).resolve() / "runs" / str(job_id) / f"attempt-{attempt}"

    def sql(self, query: str, **params):
        engine = sqlalchemy.create_engine(self.database_url)
        try:
            with engine.connect() as c:
                return c.execute(sqlalchemy.text(query), params).all()
        finally:
            engine.dispose()

    def close(self) -> None:
        for p in reversed(self.procs):
            stop(p, timeout=20)


def new_stack(pg: PrivatePostgres, broker_url: str, root: Path, **extra: str) -> Stack:
    """A fresh database on the private cluster, migrated, with the fault tests' short leases; the
    caller starts the API and workers it needs and closes the stack (the chaos benchmark too)."""
    database_url = pg.create_database()
    env = {**os.environ, "DISTILLERY_DATABASE_URL": database_url, "DISTILLERY_BROKER_URL": broker_url,
           "DISTILLERY_QUEUE": f"faults-{secrets.token_hex(4)}", "DISTILLERY_STORAGE": str(root / "storage"),
           "DISTILLERY_DATA_ROOTS": str(root.parent), "DISTILLERY_EXPORT_ARGS": EXPORT_ARGS,
           "DISTILLERY_CANCEL_GRACE_S": "5", "DISTILLERY_POLL_S": "0.3", "DISTILLERY_SECRET_KEY": secrets.token_hex(32),
           "DISTILLERY_LEASE_S": "6", "DISTILLERY_REQUEUE_AFTER_S": "5", **extra}
    distillery("db", "upgrade", env=env)
    return Stack(env=env, root=root, database_url=database_url)


@pytest.fixture
def make_stack(private_pg, tmp_path):
    """``make_stack(broker_url, **env)``: :func:`new_stack` in the test's tmp_path; everything is
    stopped at the end."""
    stacks: list[Stack] = []

    def make(broker_url: str, **extra: str) -> Stack:
        stack = new_stack(private_pg, broker_url, tmp_path, **extra)
        stacks.append(stack)
        return stack

    yield make
    for s in stacks:
        s.close()


def attempt_processes(run_dir: Path) -> list[psutil.Process]:
    """Live processes whose command line names ``run_dir`` (torchrun or the warm-start leader, the
    ranks, the exporter): the worker's own finder, zombies left out."""
    found = []
    for p in worker_lease.attempt_processes(run_dir):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


def is_rank(cmdline: list[str]) -> bool:
    """A training rank's command line (not torchrun's, not the warm-start leader's)."""
    cmd = worker_lease.command_line(cmdline).split()
    return "deit_core.train" in cmd and "torch.distributed.run" not in cmd


def events(run_dir: Path, kind: str) -> list[dict]:
    """The ``kind`` events of a run's metrics.jsonl."""
    import json

    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == kind:
            out.append(ev)
    return out


def kill9(proc: subprocess.Popen) -> None:
    """SIGKILL exactly this process (not its group: its children must die on their own)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
