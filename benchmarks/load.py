"""Load test of the production stack: gunicorn + PostgreSQL + Redis on loopback.

Starts ``distillery serve`` (gunicorn) on a fresh database of a PostgreSQL server and a fresh
queue on a Redis server (both on 127.0.0.1; a private database and queue, dropped/cleared at the
end). No worker is started: submitted jobs stay ``queued``, so the test measures the API, the
database and the broker publish, not training. Then:

1. ``--jobs`` job submissions (POST /jobs) from ``--clients`` concurrent client threads;
2. every client lists jobs (GET /jobs, pages of 50) ``--lists`` times;
3. every job is polled once (GET /jobs/{id});
4. one client alone, ``--quiet-runs`` times, alternates a page of 50 (GET /jobs?limit=50) and one job
   (GET /jobs/{id}): the cost of each without queueing behind 50 clients;
5. every job is cancelled (POST /jobs/{id}/cancel: a queued job is cancelled at once).

It prints the ratio of a page of 50's p50 to a single job's p50, under load (step 2 against step 3)
and alone (step 4); the goal is at most 3x (``--max-ratio``): a page is one constant set of queries
(tests/test_list_queries.py), so 50 rows should not cost 50 single requests.

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

    def ratio(self, op: str, base: str) -> float | None:
        """p50 of ``op`` over p50 of ``base`` (None if either was not measured)."""
        if not self.latency.get(op) or not self.latency.get(base):
            return None
        return statistics.median(self.latency[op]) / statistics.median(self.latency[base])

    def server_errors(self) -> dict[str, int]:
        return {op: sum(n for code, n in st.items() if code >= 500 or code == 0) for op, st in self.status.items()
                if any(code >= 500 or code == 0 for code in st)}


def queue_keys(client, queue: str) -> list[bytes]:
    """Every Redis list of ``queue``: kombu keeps one per priority step (``queue``, ``queue\\x06\\x164``...), and
    a normal-priority job goes to step 4, not to ``queue`` itself; a size's queue is ``queue.pN``."""
    return list(client.scan_iter(match=f"{queue}*"))


def queued_messages(redis_url: str, queue: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    return sum(client.llen(k) for k in queue_keys(client, queue) if client.type(k) == b"list")


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
        client = redis.Redis.from_url(args.redis)
        for key in queue_keys(client, queue):
            client.delete(key)
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def load(args: argparse.Namespace, base: str, h: dict, db_url: str, queue: str, redis_url: str) -> int:
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

    def quiet(n: int) -> None:
        """One client, nothing else running: a page of 50 and a single job, alternately."""
        for i in range(n):
            rec.call("quiet: GET /jobs (page of 50)", session(), "GET", f"{base}/jobs", params={"limit": 50})
            rec.call("quiet: GET /jobs/{id}", session(), "GET", f"{base}/jobs/{ids[i % len(ids)]}")

    def cancel(job_id: int) -> None:
        rec.call("POST /jobs/{id}/cancel", session(), "POST", f"{base}/jobs/{job_id}/cancel")

    t0 = time.monotonic()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(submit, range(args.jobs), timeout=args.timeout))
        messages = queued_messages(redis_url, queue)
        list(pool.map(listing, range(args.clients * args.lists), timeout=args.timeout))
        list(pool.map(poll, ids, timeout=args.timeout))
        if ids and args.quiet_runs:
            quiet(args.quiet_runs)
        list(pool.map(cancel, ids, timeout=args.timeout))
    wall = time.monotonic() - t0

    engine = sqlalchemy.create_engine(db_url)
    with engine.connect() as c:
        rows = c.execute(sqlalchemy.text("SELECT name, count(*) FROM jobs GROUP BY name")).all()
    engine.dispose()
    per_name = dict(rows)
    print(f"{args.jobs} submissions from {args.clients} clients, then {args.clients * args.lists} listings, "
          f"{len(ids)} polls, {args.quiet_runs} quiet pairs, {len(ids)} cancels in {wall:.1f}s "
          f"(gunicorn {args.gunicorn_workers} workers x {args.gunicorn_threads} threads; no worker: jobs stay queued)")
    print(rec.table())
    problems = page_ratio_problems(rec, args.max_ratio) + bookkeeping_problems(rec, args.jobs, ids, per_name, messages)
    print("OK: every submission recorded exactly once, one message each, no 5xx, page ratio within the goal"
          if not problems else "FAILED:\n" + "\n".join(problems))
    return 0 if not problems else 1


def bookkeeping_problems(rec: Recorder, jobs: int, ids: list[int], per_name: dict, messages: int) -> list[str]:
    """Every submission recorded exactly once, one message each, no 5xx or connection error."""
    problems = []
    if rec.server_errors():
        problems.append(f"5xx answers or connection errors (status 0): {rec.server_errors()}")
    if len(ids) != jobs or len(set(ids)) != jobs:
        problems.append(f"{len(ids)} submissions accepted ({len(set(ids))} distinct ids), expected {jobs}")
    wrong = {n: k for n, k in per_name.items() if k != 1}
    if len(per_name) != jobs or wrong:
        problems.append(f"{len(per_name)} job names recorded, expected {jobs}; recorded more than once: {wrong}")
    if messages != jobs:
        problems.append(f"{messages} messages in the queue after the submissions, expected {jobs}")
    return problems


def page_ratio_problems(rec: Recorder, max_ratio: float) -> list[str]:
    """Print a page of 50's p50 over a single job's, under load and alone; the one alone is held to the goal
    (under load both are mostly queueing behind the other clients)."""
    ratios = {label: rec.ratio(page, one) for label, page, one in (
        ("under load", "GET /jobs (page of 50)", "GET /jobs/{id}"),
        ("alone", "quiet: GET /jobs (page of 50)", "quiet: GET /jobs/{id}"))}
    for label, r in ratios.items():
        if r is not None:
            print(f"page of 50 / single job, p50 {label}: {r:.2f}x (goal: at most {max_ratio:g}x)")
    alone = ratios["alone"]
    return [f"a page of 50 costs {alone:.2f}x a single job alone, more than {max_ratio:g}x"] \
        if alone is not None and alone > max_ratio else []


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
    p.add_argument("--quiet-runs", type=int, default=40, help="pages of 50 and single jobs timed by one client alone")
    p.add_argument("--max-ratio", type=float, default=3.0, help="page of 50 over single job, p50 alone: the goal")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="distillery-load-") as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
