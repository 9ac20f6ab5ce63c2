"""A live API for the attacker's tests and the fuzzer: gunicorn on a private PostgreSQL database and
Redis queue, with **no worker**, so nothing submitted here ever trains (jobs stay queued; the cap on
jobs in flight is low so the fuzzer meets it too). Same private-resource rules as tests/service.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from server.cli import free_port
from tests.helpers import wait_healthy
from tests.service.conftest import pg_database, redis_broker, stop, write_digits  # noqa: F401

IN_FLIGHT = 3


@dataclass
class Api:
    url: str
    env: dict
    root: Path
    data: Path
    storage: Path
    database_url: str
    api_pid: int
    tokens: dict = field(default_factory=dict)

    def h(self, user: str) -> dict:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def call(self, method: str, path: str, user: str | None = "alice", **kw) -> requests.Response:
        headers = {**(self.h(user) if user else {}), **kw.pop("headers", {})}
        return requests.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=60, **kw)

    def token(self, user: str, *extra: str) -> str:
        """A new token for ``user`` (created as needed) via `distillery token create ... EXTRA`."""
        out = subprocess.run([sys.executable, "-m", "distillery", "token", "create", "--user", user, *extra], env=self.env,
                             capture_output=True, text=True, check=True, timeout=120)
        self.tokens[user] = out.stdout.strip().splitlines()[-1]
        return self.tokens[user]

    def sql(self, statement: str, **params) -> list:
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.database_url)
        try:
            with engine.begin() as c:
                result = c.execute(sqlalchemy.text(statement), params)
                return result.fetchall() if result.returns_rows else []
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def api(pg_database, redis_broker, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("security")
    data = write_digits(root / "data" / "digits", per_class_train=4, per_class_val=2)
    env = {**os.environ,
           "DISTILLERY_DATABASE_URL": pg_database, "DISTILLERY_BROKER_URL": redis_broker[0],
           "DISTILLERY_QUEUE": redis_broker[1], "DISTILLERY_STORAGE": str(root / "storage"),
           "DISTILLERY_DATA_ROOTS": str(root / "data"), "DISTILLERY_STATE_DIR": str(root / "state"),
           "DISTILLERY_SECRET_KEY": secrets.token_hex(32), "DISTILLERY_MAX_JOBS_IN_FLIGHT": str(IN_FLIGHT)}
    subprocess.run([sys.executable, "-m", "distillery", "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    port = free_port()
    with open(root / "api.log", "wb") as al:
        proc = subprocess.Popen([sys.executable, "-m", "distillery", "serve", "--port", str(port), "--workers", "1",
                                 "--threads", "4"], env=env, stdout=al, stderr=subprocess.STDOUT, start_new_session=True)
    svc = Api(url=f"http://127.0.0.1:{port}", env=env, root=root, data=data, storage=root / "storage",
              database_url=pg_database, api_pid=proc.pid)
    try:
        wait_healthy(f"{svc.url}/api/v1/health", proc, timeout=90,
                     describe=lambda: (root / "api.log").read_text(errors="replace")[-3000:])
        svc.token("alice")
        svc.token("bob")
        svc.token("root", "--admin")
        yield svc
    finally:
        stop(proc)
