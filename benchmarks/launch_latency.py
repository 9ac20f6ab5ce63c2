"""Time from ``POST /jobs`` to the first training step: the local launcher vs the Slurm launcher.

Starts a real service (gunicorn API, PostgreSQL, Redis, as the tests do) and, in turn, a worker
with the local launcher (torchrun on this host) and one with ``DISTILLERY_LAUNCHER=slurm`` on the
two-node test cluster of ``tests/slurm/cluster.py`` (slurmctld + two slurmd on this host). Each
job is a small teacher run (regnety_002, 32 px digits, ``log_every: 1``); the first step is the
``time`` of the first ``step`` event rank 0 writes to ``metrics.jsonl``, the POST time is taken
just before the request, both on this host's clock. Each job is cancelled right after its first
step. Prints a Markdown table (median, min and max of ``--runs`` jobs per row). Run as root from
the repository root:

    .venv/bin/python -m benchmarks.launch_latency --runs 3
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from deit_core.layout import METRICS_FILE
from server.cli import free_port
from server.vocabulary import LAUNCHERS, LOCAL, SLURM
from tests.helpers import TINY_RECIPE, wait_healthy, wait_until
from tests.service.conftest import PG_ADMIN, REDIS, distillery, new_token, stop, write_digits
from tests.slurm.cluster import SlurmCluster

TRAIN = {**TINY_RECIPE, "batch_size": 16, "smoothing": 0, "log_every": 1, "drop_path": 0.0, "epochs": 5}
ROWS = [(LOCAL, {"processes": 1}), (LOCAL, {"processes": 2}),
        (SLURM, {"nodes": 1, "processes_per_node": 1}), (SLURM, {"nodes": 2, "processes_per_node": 1})]


def first_step_time(run_dir: Path) -> float | None:
    path = run_dir / METRICS_FILE
    for line in path.read_text().splitlines() if path.exists() else []:
        ev = json.loads(line)
        if ev.get("event") == "step":
            return float(ev["time"])
    return None


def measure(url: str, token: str, storage: Path, data: Path, resources: dict) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    cfg = {"kind": "teacher", "data": {"train": f"{data}/train", "val": f"{data}/val", "img_size": 32},
           "teacher": {"model": "regnety_002"}, "train": TRAIN, "resources": resources}
    t0 = time.time()
    r = requests.post(f"{url}/api/v1/jobs", json={"kind": "teacher", "name": "latency", "config": cfg}, headers=headers,
                      timeout=60)
    r.raise_for_status()
    job_id = r.json()["id"]
    run_dir = storage.resolve() / "runs" / str(job_id) / "attempt-1"
    t1 = wait_until(lambda: first_step_time(run_dir), 300, f"job {job_id}'s first step", interval=0.2)
    requests.post(f"{url}/api/v1/jobs/{job_id}/cancel", headers=headers, timeout=60)
    wait_until(lambda: requests.get(f"{url}/api/v1/jobs/{job_id}", headers=headers, timeout=60).json()["state"]
               == "cancelled", 120, f"job {job_id} to be cancelled")
    return t1 - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="jobs per row")
    args = p.parse_args()
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="distillery-latency-"))
    cluster = SlurmCluster(root / "slurm-cluster")
    cluster.start()
    db = f"distillery_bench_{secrets.token_hex(4)}"
    admin = psycopg.connect(PG_ADMIN, autocommit=True)
    admin.execute(f'CREATE DATABASE "{db}"')
    data = write_digits(root / "data" / "digits", per_class_train=20, per_class_val=5)
    env = {**os.environ, **cluster.env, "DISTILLERY_DATABASE_URL": f"{PG_ADMIN.rsplit('/', 1)[0]}/{db}".replace(
               "postgresql://", "postgresql+psycopg://"),
           "DISTILLERY_BROKER_URL": f"{REDIS}/{secrets.randbelow(15) + 1}", "DISTILLERY_QUEUE": f"latency-{secrets.token_hex(4)}",
           "DISTILLERY_STORAGE": str(root / "storage"), "DISTILLERY_DATA_ROOTS": str(root / "data"),
           "DISTILLERY_SECRET_KEY": secrets.token_hex(16), "DISTILLERY_MAX_NODES": "2", "DISTILLERY_POLL_S": "0.3",
           "DISTILLERY_CANCEL_GRACE_S": "5", "DISTILLERY_SLURM_POLL_S": "1", "OMP_NUM_THREADS": "1"}
    procs: list[subprocess.Popen] = []
    results: dict[tuple[str, str], list[float]] = {}
    try:
        distillery("db", "upgrade", env=env)
        port = free_port()
        api = subprocess.Popen([sys.executable, "-m", "distillery", "serve", "--port", str(port), "--workers", "1"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(api)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/api/v1/health", api, timeout=90)
        token = new_token("bench", env)
        for launcher in LAUNCHERS:
            worker = subprocess.Popen([sys.executable, "-m", "distillery", "worker"],
                                      env={**env, "DISTILLERY_LAUNCHER": launcher},
                                      stdout=open(root / f"worker-{launcher}.log", "ab"), stderr=subprocess.STDOUT,
                                      start_new_session=True)
            procs.append(worker)
            time.sleep(8)  # the worker is up and consuming before the first POST
            for kind, resources in ROWS:
                if kind != launcher:
                    continue
                key = (launcher, json.dumps(resources))
                results[key] = [measure(url, token, Path(env["DISTILLERY_STORAGE"]), data, resources)
                                for _ in range(args.runs)]
            stop(worker, timeout=60)
    finally:
        for proc in procs:
            stop(proc, timeout=30)
        cluster.stop()
        admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    print(f"| launcher | resources | POST -> first step, median (min-max) of {args.runs} |")
    print("|---|---|---|")
    for (launcher, resources), times in results.items():
        print(f"| {launcher} | `{resources}` | {statistics.median(times):.1f} s ({min(times):.1f}-{max(times):.1f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
