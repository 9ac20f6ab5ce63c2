"""Time from ``POST /jobs`` to the first training step, and where it goes: warm and cold local starts, Slurm.

Starts a real service (gunicorn API, PostgreSQL, Redis, as the tests do) and, in turn, a worker per
row: the local launcher with its warm start (``worker.warm_start``: runs forked from an interpreter
that has torch, timm and the engine imported), the local launcher cold (``DISTILLERY_WARM_START=0``:
torchrun, every rank imports again), and ``DISTILLERY_LAUNCHER=slurm`` on the two-node test cluster
of ``tests/slurm/cluster.py`` (slurmctld + two slurmd on this host). Each job is a small teacher run
(regnety_002, 32 px digits, ``log_every: 1``), cancelled after its first step. Each row's worker
gets a few seconds to be ready first (a warm server finishes its imports then), as a worker that has
been up a while would be.

The breakdown, all on this host's clock: **queue** (POST -> the worker's "received" log line),
**claim** (-> the job's ``started_at``), **launch** (-> the rank's launcher process exists: the
warm leader's fork, torchrun's start, or srun's torchrun on a node), **spawn** (-> rank 0's process
exists: torchrun imports torch first), **imports** (-> the engine is entered), **setup** (->
"loading data": process group, logging), **data**, **model** (-> the ``start`` event), **first
step**. Prints Markdown tables (medians of ``--runs`` jobs per row). Run as root from the
repository root:

    .venv/bin/python -m benchmarks.launch_latency --runs 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import requests

from deit_core.layout import METRICS_FILE
from server.cli import free_port
from server.vocabulary import LOCAL, SLURM
from tests.helpers import TINY_RECIPE, wait_healthy, wait_until
from tests.service.conftest import PG_ADMIN, REDIS, distillery, new_token, stop, write_digits
from tests.slurm.cluster import SlurmCluster

TRAIN = {**TINY_RECIPE, "batch_size": 16, "smoothing": 0, "log_every": 1, "drop_path": 0.0, "epochs": 5}
# (row name, worker environment, resources)
ROWS = [("local, warm", {"DISTILLERY_LAUNCHER": LOCAL}, {"processes": 1}),
        ("local, warm", {"DISTILLERY_LAUNCHER": LOCAL}, {"processes": 2}),
        ("local, cold (torchrun)", {"DISTILLERY_LAUNCHER": LOCAL, "DISTILLERY_WARM_START": "0"}, {"processes": 1}),
        ("local, cold (torchrun)", {"DISTILLERY_LAUNCHER": LOCAL, "DISTILLERY_WARM_START": "0"}, {"processes": 2}),
        (SLURM, {"DISTILLERY_LAUNCHER": SLURM}, {"nodes": 1, "processes_per_node": 1}),
        (SLURM, {"DISTILLERY_LAUNCHER": SLURM}, {"nodes": 2, "processes_per_node": 1})]
PARTS = ("queue", "claim", "launch", "spawn", "imports", "setup", "data", "model", "first step")
RECEIVED = re.compile(r"^\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\b.*Task \S+\[[^\]]+\] received")


def run_events(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def first_step_time(events: list[dict]) -> float | None:
    """When rank 0 logged its first step (None before it)."""
    return next((float(e["time"]) for e in events if e.get("event") == "step"), None)


def received_times(worker_log: Path) -> list[float]:
    """When the worker logged each task as received (Celery's line; local time, ms resolution)."""
    out = []
    for line in worker_log.read_text(errors="replace").splitlines():
        m = RECEIVED.match(line)
        if m:
            out.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


def breakdown(t0: float, received: float | None, started_at: float | None, events: list[dict]) -> dict[str, float]:
    """Seconds per part of :data:`PARTS` (the module docstring); a part whose marks are missing is left out."""
    start = next(e for e in events if e["event"] == "start")
    phases = {e["phase"]: e["time"] for e in events if e["event"] == "phase"}
    launch = start.get("launch") or {}
    model_phase = phases.get("building model", phases.get("loading teacher"))
    marks = [t0, received, started_at, launch.get("launcher_started"), launch.get("rank_started"), launch.get("entered"),
             phases.get("loading data"), model_phase, start["time"], first_step_time(events)]
    parts = {}
    for name, a, b in zip(PARTS, marks, marks[1:]):
        if a is not None and b is not None:
            parts[name] = b - a
    parts["total"] = marks[-1] - t0
    return parts


def measure(url: str, token: str, storage: Path, data: Path, resources: dict, worker_log: Path) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    cfg = {"kind": "teacher", "data": {"train": f"{data}/train", "val": f"{data}/val", "img_size": 32},
           "teacher": {"model": "regnety_002"}, "train": TRAIN, "resources": resources}
    t0 = time.time()
    r = requests.post(f"{url}/api/v1/jobs", json={"kind": "teacher", "name": "latency", "config": cfg}, headers=headers,
                      timeout=60)
    r.raise_for_status()
    job_id = r.json()["id"]
    run_dir = storage.resolve() / "runs" / str(job_id) / "attempt-1"
    wait_until(lambda: first_step_time(run_events(run_dir)), 300, f"job {job_id}'s first step", interval=0.2)
    job = requests.get(f"{url}/api/v1/jobs/{job_id}", headers=headers, timeout=60).json()
    requests.post(f"{url}/api/v1/jobs/{job_id}/cancel", headers=headers, timeout=60)
    wait_until(lambda: requests.get(f"{url}/api/v1/jobs/{job_id}", headers=headers, timeout=60).json()["state"]
               == "cancelled", 120, f"job {job_id} to be cancelled")
    started = datetime.fromisoformat(job["started_at"].replace("Z", "+00:00")).timestamp() if job.get("started_at") else None
    received = next((t for t in received_times(worker_log) if t >= t0 - 1), None)
    return breakdown(t0, received, started, run_events(run_dir))


def cpu_line() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{model}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end"


def table(results: dict[tuple[str, str], list[dict[str, float]]], runs: int) -> str:
    lines = [f"| launcher | resources | POST -> first step | {' | '.join(PARTS)} |",
             "|---|---|---|" + "---|" * len(PARTS)]
    for (name, resources), samples in results.items():
        totals = [s["total"] for s in samples]
        cells = []
        for part in PARTS:
            values = [s[part] for s in samples if part in s]
            cells.append(f"{statistics.median(values):.2f}" if values else "-")
        lines.append(f"| {name} | `{resources}` | {statistics.median(totals):.2f} s ({min(totals):.2f}-{max(totals):.2f}) | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nMedians of {runs} jobs per row, seconds; {cpu_line()}."


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="jobs per row")
    p.add_argument("--local-only", action="store_true", help="skip the Slurm rows (no cluster is started)")
    args = p.parse_args()
    import psycopg

    rows = [r for r in ROWS if not (args.local_only and r[1]["DISTILLERY_LAUNCHER"] == SLURM)]
    root = Path(tempfile.mkdtemp(prefix="distillery-latency-"))
    cluster = None if args.local_only else SlurmCluster(root / "slurm-cluster")
    if cluster is not None:
        cluster.start()
    db = f"distillery_bench_{secrets.token_hex(4)}"
    admin = psycopg.connect(PG_ADMIN, autocommit=True)
    admin.execute(f'CREATE DATABASE "{db}"')
    data = write_digits(root / "data" / "digits", per_class_train=20, per_class_val=5)
    env = {**os.environ, **(cluster.env if cluster else {}),
           "DISTILLERY_DATABASE_URL": f"{PG_ADMIN.rsplit('/', 1)[0]}/{db}".replace("postgresql://", "postgresql+psycopg://"),
           "DISTILLERY_BROKER_URL": f"{REDIS}/{secrets.randbelow(15) + 1}", "DISTILLERY_QUEUE": f"latency-{secrets.token_hex(4)}",
           "DISTILLERY_STORAGE": str(root / "storage"), "DISTILLERY_DATA_ROOTS": str(root / "data"),
           "DISTILLERY_SECRET_KEY": secrets.token_hex(16), "DISTILLERY_MAX_NODES": "2", "DISTILLERY_POLL_S": "0.3",
           "DISTILLERY_CANCEL_GRACE_S": "5", "DISTILLERY_SLURM_POLL_S": "1", "OMP_NUM_THREADS": "1"}
    procs: list[subprocess.Popen] = []
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        distillery("db", "upgrade", env=env)
        port = free_port()
        api = subprocess.Popen([sys.executable, "-m", "distillery", "serve", "--port", str(port), "--workers", "1"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(api)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/api/v1/health", api, timeout=90)
        token = new_token("bench", env)
        for i, (name, worker_env, resources) in enumerate(rows):
            worker_log = root / f"worker-{i}.log"
            worker = subprocess.Popen([sys.executable, "-m", "distillery", "worker"], env={**env, **worker_env},
                                      stdout=open(worker_log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(worker)
            time.sleep(15)  # the worker is up and consuming (and its warm server has imported) before the first POST
            results[(name, json.dumps(resources))] = [
                measure(url, token, Path(env["DISTILLERY_STORAGE"]), data, resources, worker_log) for _ in range(args.runs)]
            stop(worker, timeout=60)
    finally:
        for proc in procs:
            stop(proc, timeout=30)
        if cluster is not None:
            cluster.stop()
        admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    print(table(results, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
