"""Load test of the production stack: gunicorn + PostgreSQL + Redis on loopback.

Starts ``distillery serve`` (gunicorn) on a fresh database of a PostgreSQL server and a fresh
queue on a Redis server (both on 127.0.0.1; a private database and queue, dropped/cleared at the
end). No worker is started: submitted jobs stay ``queued``, so the test measures the API, the
database and the broker publish, not training. Then:

1. ``--jobs`` job submissions (POST /jobs) from ``--clients`` concurrent client threads;
2. every client lists jobs (GET /jobs, pages of 50) ``--lists`` times;
3. every job is polled once (GET /jobs/{id});
4. every job is cancelled (POST /jobs/{id}/cancel: a queued job is cancelled at once).

It asserts that every submission is recorded exactly once (one row per unique name, ``--jobs``
rows in all, one message each in the Redis queue) and that no request got a 5xx or a connection
error (status 0), and prints
p50/p99 latencies per operation. Bounded: ``--timeout`` seconds overall.

    .venv/bin/python benchmarks/load.py --jobs 500 --clients 50
"""
from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_dataset(root: Path) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(root / split / cls / f"{i}.png")
    return root


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    def call(self, op: str, session: requests.Session, method: str, url: str, **kw) -> requests.Response | None:
        """One request; a connection error is recorded as status 0 (and counted as a failure)."""
        t0 = time.perf_counter()
        try:
            r = session.request(method, url, timeout=60, **kw)
        except requests.RequestException:
            r = None
        dt = time.perf_counter() - t0
        with self.lock:
            self.latency[op].append(dt)
            self.status[op][r.status_code if r is not None else 0] += 1
        return r

    def table(self) -> str:
        rows = ["| operation | requests | p50 ms | p99 ms | max ms | statuses |", "|---|---:|---:|---:|---:|---|"]
        for op, xs in self.latency.items():
            xs = sorted(xs)
            p99 = xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]
            statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.status[op].items()))
            rows.append(f"| {op} | {len(xs)} | {statistics.median(xs) * 1000:.0f} | {p99 * 1000:.0f} | "
                        f"{xs[-1] * 1000:.0f} | {statuses} |")
        return "\n".join(rows)

    def server_errors(self) -> dict[str, int]:
        return {op: sum(n for code, n in st.items() if code >= 500 or code == 0) for op, st in self.status.items()
                if any(code >= 500 or code == 0 for code in st)}


def run(args: argparse.Namespace, tmp: Path) -> int:
    import psycopg
    import redis

    db_name = f"load_{secrets.token_hex(4)}"
    queue = f"load-{secrets.token_hex(4)}"
    admin = args.postgres.rstrip("/")
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db_name}"')
    db_url = f"{admin.replace('postgresql://', 'postgresql+psycopg://')}/{db_name}"
    env = {**os.environ, "DISTILLERY_DATABASE_URL": db_url, "DISTILLERY_BROKER_URL": args.redis,
           "DISTILLERY_QUEUE": queue, "DISTILLERY_STORAGE": str(tmp / "storage"), "DISTILLERY_DATA_ROOTS": str(tmp),
           "DISTILLERY_SECRET_KEY": secrets.token_hex(32), "DISTILLERY_MAX_JOBS_IN_FLIGHT": str(args.jobs * 2)}
    api = None
    try:
        subprocess.run([sys.executable, "-m", "distillery", "db", "upgrade"], env=env, check=True, capture_output=True)
        token = subprocess.run([sys.executable, "-m", "distillery", "token", "create", "--user", "load"], env=env,
                               check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        port = free_port()
        api = subprocess.Popen([sys.executable, "-m", "distillery", "serve", "--port", str(port), "--workers",
                                str(args.gunicorn_workers), "--threads", str(args.gunicorn_threads)], env=env,
                               stdout=open(tmp / "api.log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
        base = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise RuntimeError("the API did not come up:\n" + (tmp / "api.log").read_text()[-2000:])
            time.sleep(0.3)
        h = {"Authorization": f"Bearer {token}"}
        data = write_dataset(tmp / "tiny")
        r = requests.post(f"{base}/datasets", json={"name": "tiny", "path": str(data)}, headers=h, timeout=30)
        assert r.status_code == 201, r.text
        return load(args, base, h, db_url, queue, args.redis)
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=30)
        redis.Redis.from_url(args.redis).delete(queue)
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def load(args: argparse.Namespace, base: str, h: dict, db_url: str, queue: str, redis_url: str) -> int:
    import redis
    import sqlalchemy

    rec = Recorder()
    config = {"kind": "teacher", "data": {"train": "dataset:tiny/train", "val": "dataset:tiny/val", "img_size": 32},
              "teacher": {"model": "regnety_002"}, "train": {"epochs": 1, "batch_size": 4}, "resources": {"processes": 1}}
    sessions = threading.local()

    def session() -> requests.Session:
        if not hasattr(sessions, "s"):
            sessions.s = requests.Session()
            # no keep-alive: gunicorn closes idle connections after 2 s, and a request sent on one it
            # just closed fails on the client ("Remote end closed connection") without reaching it
            sessions.s.headers.update({**h, "Connection": "close"})
        return sessions.s

    ids: list[int] = []
    ids_lock = threading.Lock()

    def submit(i: int) -> None:
        body = {"kind": "teacher", "name": f"load-{i}", "config": config}
        r = rec.call("POST /jobs", session(), "POST", f"{base}/jobs", json=body)
        if r is not None and r.status_code == 201:
            with ids_lock:
                ids.append(r.json()["id"])

    def listing(_: int) -> None:
        cursor = None
        for _page in range(3):
            r = rec.call("GET /jobs (page of 50)", session(), "GET", f"{base}/jobs",
                         params={"limit": 50, **({"cursor": cursor} if cursor else {})})
            cursor = r.json().get("next_cursor") if r is not None and r.status_code == 200 else None
            if not cursor:
                break

    def poll(job_id: int) -> None:
        rec.call("GET /jobs/{id}", session(), "GET", f"{base}/jobs/{job_id}")

    def cancel(job_id: int) -> None:
        rec.call("POST /jobs/{id}/cancel", session(), "POST", f"{base}/jobs/{job_id}/cancel")

    t0 = time.monotonic()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(submit, range(args.jobs), timeout=args.timeout))
        messages = redis.Redis.from_url(redis_url).llen(queue)
        list(pool.map(listing, range(args.clients * args.lists), timeout=args.timeout))
        list(pool.map(poll, ids, timeout=args.timeout))
        list(pool.map(cancel, ids, timeout=args.timeout))
    wall = time.monotonic() - t0

    engine = sqlalchemy.create_engine(db_url)
    with engine.connect() as c:
        rows = c.execute(sqlalchemy.text("SELECT name, count(*) FROM jobs GROUP BY name")).all()
    engine.dispose()
    per_name = dict(rows)
    print(f"{args.jobs} submissions from {args.clients} clients, then {args.clients * args.lists} listings, "
          f"{len(ids)} polls, {len(ids)} cancels in {wall:.1f}s "
          f"(gunicorn {args.gunicorn_workers} workers x {args.gunicorn_threads} threads; no worker: jobs stay queued)")
    print(rec.table())
    problems = []
    if rec.server_errors():
        problems.append(f"5xx answers or connection errors (status 0): {rec.server_errors()}")
    if len(ids) != args.jobs or len(set(ids)) != args.jobs:
        problems.append(f"{len(ids)} submissions accepted ({len(set(ids))} distinct ids), expected {args.jobs}")
    wrong = {n: k for n, k in per_name.items() if k != 1}
    if len(per_name) != args.jobs or wrong:
        problems.append(f"{len(per_name)} job names recorded, expected {args.jobs}; recorded more than once: {wrong}")
    if messages != args.jobs:
        problems.append(f"{messages} messages in the queue after the submissions, expected {args.jobs}")
    print("OK: every submission recorded exactly once, one message each, no 5xx" if not problems else
          "FAILED:\n" + "\n".join(problems))
    return 0 if not problems else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=500)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--lists", type=int, default=2, help="listings per client")
    p.add_argument("--postgres", default=os.environ.get("DISTILLERY_TEST_PG_SERVER", "postgresql://postgres@127.0.0.1:5432"))
    p.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    p.add_argument("--gunicorn-workers", type=int, default=2)
    p.add_argument("--gunicorn-threads", type=int, default=4)
    p.add_argument("--timeout", type=float, default=600, help="seconds per phase")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="distillery-load-") as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
