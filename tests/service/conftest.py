"""Live service fixtures: a fresh PostgreSQL database, a private Redis db/queue, a real gunicorn
API and a real Celery worker (running real torchrun), shared by every test in the session.

Under ``CI=true`` a missing PostgreSQL or Redis is an error; elsewhere those tests are skipped
with the reason. Every resource is private to the session (random database and queue names,
free ports, a temp storage folder), so engineers can run the suite at the same time.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from server.cli import free_port  # noqa: F401  (also imported by the tests of this folder)
from server.vocabulary import FINAL_STATES
from tests.conftest import small_imagefolder
from tests.helpers import TINY_RECIPE, job_config, wait_for_job, wait_healthy

PG_ADMIN = os.environ.get("DISTILLERY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("DISTILLERY_TEST_REDIS", "redis://127.0.0.1:6379")
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TRAIN = {**TINY_RECIPE, "batch_size": 32, "smoothing": 0, "log_every": 2, "drop_path": 0.0}
EXPORT_ARGS = "--no-pte --latency-runs 3"


def unavailable(reason: str):
    if CI:
        pytest.fail(f"{reason} (CI=true: the service tests must run, not skip)")
    pytest.skip(reason)


def distillery(*args: str, env: dict, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distillery", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, check=check, timeout=300)


def new_token(user: str, env: dict, cwd: Path | None = None, admin: bool = False) -> str:
    out = distillery("token", "create", "--user", user, *(["--admin"] if admin else []), env=env, cwd=cwd)
    return out.stdout.strip().splitlines()[-1]


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def write_digits(dest: Path, per_class_train: int = 40, per_class_val: int = 10) -> Path:
    """A small subset of the digits ImageFolder (fast runs, all 10 classes)."""
    full = dest.parent / f".{dest.name}-full"
    subprocess.run([sys.executable, "-m", "distillery", "demo-data", "--output", str(full)], check=True,
                   capture_output=True, timeout=120)
    small_imagefolder(full, dest, {"train": per_class_train, "val": per_class_val})
    shutil.rmtree(full)
    return dest


@pytest.fixture(scope="session")
def pg_database():
    """CREATE DATABASE with a random name; DROP it (forcing out connections) at the end."""
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except Exception as e:
        unavailable(f"PostgreSQL not reachable at {PG_ADMIN}: {e}")
    name = f"distillery_test_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{base}/{name}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def redis_broker():
    """A random Redis db number and a unique queue name (no messages are ever shared); the
    queue's keys are deleted at the end."""
    try:
        import redis

        redis.Redis.from_url(REDIS, socket_connect_timeout=3).ping()
    except Exception as e:
        unavailable(f"Redis not reachable at {REDIS}: {e}")
    url, queue = f"{REDIS}/{secrets.randbelow(15) + 1}", f"distillery-test-{secrets.token_hex(4)}"
    yield url, queue
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"*{queue}*"):
        client.delete(key)
    client.close()


@dataclass
class Service:
    url: str
    env: dict
    root: Path
    data: Path
    database_url: str
    worker_log: Path
    tokens: dict = field(default_factory=dict)

    def h(self, user: str = "alice") -> dict:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def api(self, method: str, path: str, user: str | None = "alice", **kw) -> requests.Response:
        headers = {**(self.h(user) if user else {}), **kw.pop("headers", {})}
        return requests.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=60, **kw)

    def wait(self, job_id: int, states=FINAL_STATES, timeout: float = 420, user: str = "alice", on_poll=None) -> dict:
        return wait_for_job(lambda i: self.api("GET", f"/jobs/{i}", user=user).json(), job_id, states, timeout, on_poll)

    def db(self):
        import sqlalchemy

        return sqlalchemy.create_engine(self.database_url)


@pytest.fixture(scope="session")
def service(pg_database, redis_broker, tmp_path_factory):
    """gunicorn API + Celery worker on PostgreSQL and Redis, alive for the whole session."""
    root = tmp_path_factory.mktemp("service")
    data = write_digits(root / "data" / "digits")
    env = {**os.environ,
           "DISTILLERY_DATABASE_URL": pg_database, "DISTILLERY_BROKER_URL": redis_broker[0],
           "DISTILLERY_QUEUE": redis_broker[1],
           "DISTILLERY_STORAGE": str(root / "storage"), "DISTILLERY_DATA_ROOTS": str(root / "data"),
           "DISTILLERY_EXPORT_ARGS": EXPORT_ARGS, "DISTILLERY_CANCEL_GRACE_S": "5", "DISTILLERY_POLL_S": "0.3",
           "DISTILLERY_SECRET_KEY": secrets.token_hex(16)}
    distillery("db", "upgrade", env=env)
    port = free_port()
    worker_log = root / "worker.log"
    with open(worker_log, "wb") as wl, open(root / "api.log", "wb") as al:
        worker = subprocess.Popen([sys.executable, "-m", "distillery", "worker"], env=env, stdout=wl,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        api = subprocess.Popen([sys.executable, "-m", "distillery", "serve", "--port", str(port), "--workers", "2"],
                               env=env, stdout=al, stderr=subprocess.STDOUT, start_new_session=True)
    svc = Service(url=f"http://127.0.0.1:{port}", env=env, root=root, data=data, database_url=pg_database,
                  worker_log=worker_log)
    try:
        wait_healthy(f"{svc.url}/api/v1/health", api, timeout=90)
        svc.tokens = {"alice": new_token("alice", env), "bob": new_token("bob", env),
                      "root": new_token("root", env, admin=True)}
        yield svc
    finally:
        stop(api)
        stop(worker, timeout=30)
        import sqlalchemy

        sqlalchemy.create_engine(pg_database).dispose()


def teacher_config(data: str, epochs: int = 1, **train) -> dict:
    return job_config("teacher", data, {**TRAIN, "epochs": epochs, **train}, processes=2)


def distill_config(data: str, epochs: int = 2, checkpoint=None, **train) -> dict:
    return job_config("distill", data, {**TRAIN, "epochs": epochs, **train}, processes=2, checkpoint=checkpoint)
