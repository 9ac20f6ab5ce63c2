"""Scaling-out fixtures: one API (gunicorn) on a private PostgreSQL database and Redis queue, shared
by the session, and real `distillery worker` processes each test starts with its own name, slots
and scratch folder, as separate hosts would run them (here: local processes on one host, sharing
the database, the broker and the storage folder like hosts sharing a mount).

Every worker a test starts is stopped (SIGTERM, a clean stop) when the test ends, so each test
begins with no worker consuming.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import sqlalchemy

from server.cli import free_port
from tests.helpers import TINY_RECIPE, job_config, wait_for_job, wait_healthy, wait_until
from tests.service.conftest import pg_database, redis_broker, stop  # noqa: F401

# Untrained 32 px models on a few val images: the parity gate is not what these tests are about.
EXPORT_ARGS = "--no-pte --latency-runs 1 --max-drop 100"
TRAIN = {**TINY_RECIPE, "batch_size": 32, "smoothing": 0, "log_every": 2, "drop_path": 0.0}


def teacher(data: Path, processes: int = 1, epochs: int = 1) -> dict:
    """The cheapest real run: a regnety_002 teacher on the 32 px digits subset."""
    cfg = job_config("teacher", str(data), {**TRAIN, "epochs": epochs}, processes=processes)
    cfg["resources"]["max_attempts"] = 1
    return cfg


@dataclass
class Scale:
    url: str
    env: dict
    root: Path
    data: Path
    database_url: str
    tokens: dict = field(default_factory=dict)
    workers: dict = field(default_factory=dict)  # name -> Popen

    # -- the REST API ----------------------------------------------------------------------------
    def api(self, method: str, path: str, user: str = "alice", **kw) -> requests.Response:
        return requests.request(method, f"{self.url}/api/v1{path}", headers={"Authorization": f"Bearer {self.tokens[user]}"},
                                timeout=60, **kw)

    def submit(self, name: str, config: dict, user: str = "alice", **extra) -> int:
        r = self.api("POST", "/jobs", user=user, json={"kind": config["kind"], "name": name, "config": config, **extra})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def job(self, job_id: int) -> dict:
        r = self.api("GET", f"/jobs/{job_id}", user="root")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: int, states=("succeeded",), timeout: float = 300, on_poll=None) -> dict:
        return wait_for_job(self.job, job_id, states, timeout, on_poll, describe=self.logs)

    def cancel_all(self) -> None:
        """Cancel whatever is still queued or running (jobs a test leaves behind)."""
        for job in self.api("GET", "/jobs?state=queued,running,exporting&limit=200", user="root").json()["jobs"]:
            self.api("POST", f"/jobs/{job['id']}/cancel", user="root")

    def download_matches(self, artifact: dict) -> bool:
        r = self.api("GET", f"/artifacts/{artifact['id']}/download", user="root")
        return r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == artifact["sha256"]

    # -- workers ---------------------------------------------------------------------------------
    def start_worker(self, name: str, **env: str) -> subprocess.Popen:
        """A real `distillery worker` named ``name`` with its own scratch folder (and ``env``)."""
        worker_env = {**self.env, "DISTILLERY_WORKER_NAME": name, "DISTILLERY_SCRATCH": str(self.scratch(name)), **env}
        log = open(self.root / f"worker-{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "distillery", "worker"], env=worker_env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.workers[name] = proc
        wait_until(lambda: name in self.live_workers() or proc.poll() is not None, 90, f"worker {name} to announce itself",
                   describe=self.logs)
        assert proc.poll() is None, self.logs()
        return proc

    def stop_workers(self) -> None:
        for proc in self.workers.values():
            stop(proc, timeout=60)
        self.workers.clear()

    def scratch(self, name: str) -> Path:
        return self.root / "scratch" / name

    def live_workers(self) -> dict[str, dict]:
        """The ``workers`` table, by name."""
        return {r["name"]: dict(r) for r in self.sql("SELECT name, host, slots, gpus, launcher, queues FROM workers")}

    def sql(self, query: str, **params) -> list:
        engine = sqlalchemy.create_engine(self.database_url)
        try:
            with engine.connect() as c:
                return list(c.execute(sqlalchemy.text(query), params).mappings())
        finally:
            engine.dispose()

    def logs(self, n: int = 30) -> str:
        out = []
        for path in sorted(self.root.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-n:]
            out.append(f"--- {path.name} ---\n" + "\n".join(lines))
        return "\n".join(out)


def tokens(database_url: str) -> dict[str, str]:
    """alice and bob, and root the admin (in-process: three CLI runs would cost seconds each)."""
    from server.auth import create_token
    from server.db import Database

    database = Database(database_url)
    try:
        with database.session() as s:
            return {"alice": create_token(s, "alice"), "bob": create_token(s, "bob"), "root": create_token(s, "root", admin=True)}
    finally:
        database.dispose()


@pytest.fixture(scope="session")
def scale(pg_database, redis_broker, small_digits, tmp_path_factory):  # noqa: F811
    from server.migrate import upgrade

    root = tmp_path_factory.mktemp("scale")
    env = {**os.environ, "DISTILLERY_DATABASE_URL": pg_database, "DISTILLERY_BROKER_URL": redis_broker[0],
           "DISTILLERY_QUEUE": redis_broker[1], "DISTILLERY_STORAGE": str(root / "storage"),
           "DISTILLERY_DATA_ROOTS": str(small_digits.parent), "DISTILLERY_EXPORT_ARGS": EXPORT_ARGS,
           "DISTILLERY_CANCEL_GRACE_S": "5", "DISTILLERY_POLL_S": "0.3", "DISTILLERY_SECRET_KEY": secrets.token_hex(32),
           "OMP_NUM_THREADS": "1"}
    upgrade(pg_database)
    port = free_port()
    with open(root / "api.log", "wb") as log:
        api = subprocess.Popen([sys.executable, "-m", "distillery", "serve", "--port", str(port), "--workers", "1",
                                "--threads", "4"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    svc = Scale(url=f"http://127.0.0.1:{port}", env=env, root=root, data=small_digits, database_url=pg_database,
                tokens=tokens(pg_database))
    try:
        wait_healthy(f"{svc.url}/api/v1/health", api, timeout=90, describe=svc.logs)
        yield svc
    finally:
        svc.stop_workers()
        stop(api)
        sqlalchemy.create_engine(pg_database).dispose()


@pytest.fixture
def stack(scale):
    """The shared API with no worker running at the start; the test's workers are stopped and its
    leftover jobs cancelled at the end."""
    yield scale
    scale.cancel_all()
    scale.stop_workers()
