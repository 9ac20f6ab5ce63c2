"""A real two-node Slurm cluster (``tests/slurm/cluster.py``) and a live service whose worker uses
the Slurm launcher, shared by every test of this folder.

The cluster: ``slurmctld`` + ``slurmd -N n1`` + ``slurmd -N n2`` on this host, on a private
``slurm.conf`` (``SLURM_CONF``) with a private munged. The service: gunicorn API + a real
``distillery worker`` with ``DISTILLERY_LAUNCHER=slurm`` and ``DISTILLERY_MAX_NODES=2`` on a
unique queue, PostgreSQL and Redis as in ``tests/service``. Under ``CI=true`` a missing Slurm (or
PostgreSQL/Redis) fails; elsewhere the tests are skipped with the reason.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server.cli import free_port
from tests.helpers import RestClient, wait_healthy
from tests.service.conftest import (  # noqa: F401  (fixtures used by this folder)
    TRAIN,
    distillery,
    new_token,
    pg_database,
    redis_broker,
    stop,
    unavailable,
    write_digits,
)

from .cluster import SlurmCluster, missing_binaries

EXPORT_ARGS = "--no-pte --latency-runs 1 --max-drop 100"  # untrained 32 px models: the gate is not tested here


@pytest.fixture(scope="session")
def slurm_cluster():
    missing = missing_binaries()
    if missing:
        unavailable(f"Slurm is not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge, "
                    "or run scripts/ci-deps.sh)")
    if os.geteuid() != 0:
        unavailable("the test Slurm cluster runs its daemons as root (SlurmUser=root)")
    cluster = SlurmCluster()
    try:
        cluster.start()
    except Exception as e:  # noqa: BLE001 - the reason (and the daemons' logs) is the skip/fail message
        cluster.stop()
        unavailable(f"could not start the test Slurm cluster: {e}")
    yield cluster
    cluster.stop()


@dataclass
class SlurmService(RestClient):
    """The API and the Slurm-launcher worker(s) of this folder's tests."""

    url: str
    env: dict
    root: Path
    data: Path
    cluster: SlurmCluster
    token: str = ""
    workers: list = field(default_factory=list)

    api_timeout = 60
    wait_timeout = 240

    def start_worker(self) -> subprocess.Popen:
        log = open(self.root / f"worker-{len(self.workers)}.log", "ab")
        w = subprocess.Popen([sys.executable, "-m", "distillery", "worker"], env=self.env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(w)
        return w

    def run_dir(self, job_id: int, attempt: int = 1) -> Path:
        return Path(self.env["DISTILLERY_STORAGE"]).resolve() / "runs" / str(job_id) / f"attempt-{attempt}"

    def logs(self, n: int = 40) -> str:
        out = []
        for path in sorted(self.root.glob("*.log")):
            out.append(f"--- {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-n:]))
        return "\n".join(out) + "\n" + self.cluster.logs(15)


def teacher_job(data: Path, epochs: int, nodes: int = 2, max_attempts: int = 3) -> dict:
    """A small teacher job on ``nodes`` nodes x 1 process (gloo on CPU)."""
    return {"kind": "teacher", "data": {"train": f"{data}/train", "val": f"{data}/val", "img_size": 32},
            "teacher": {"model": "regnety_002"}, "train": {**TRAIN, "epochs": epochs},
            "resources": {"nodes": nodes, "processes_per_node": 1, "max_attempts": max_attempts}}


@pytest.fixture(scope="session")
def slurm_service(slurm_cluster, pg_database, redis_broker, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("slurm-service")
    data = write_digits(root / "data" / "digits", per_class_train=20, per_class_val=5)
    env = {**os.environ, **slurm_cluster.env,
           "DISTILLERY_DATABASE_URL": pg_database, "DISTILLERY_BROKER_URL": redis_broker[0],
           "DISTILLERY_QUEUE": f"{redis_broker[1]}-slurm-{secrets.token_hex(3)}",
           "DISTILLERY_STORAGE": str(root / "storage"), "DISTILLERY_DATA_ROOTS": str(tmp_path_factory.getbasetemp()),
           "DISTILLERY_EXPORT_ARGS": EXPORT_ARGS, "DISTILLERY_CANCEL_GRACE_S": "5", "DISTILLERY_POLL_S": "0.3",
           "DISTILLERY_SECRET_KEY": secrets.token_hex(16), "DISTILLERY_LEASE_S": "6",
           "DISTILLERY_LAUNCHER": "slurm", "DISTILLERY_MAX_NODES": "2", "DISTILLERY_SLURM_POLL_S": "1",
           "OMP_NUM_THREADS": "1"}
    distillery("db", "upgrade", env=env)
    port = free_port()
    with open(root / "api.log", "wb") as al:
        api = subprocess.Popen([sys.executable, "-m", "distillery", "serve", "--port", str(port), "--workers", "1"],
                               env=env, stdout=al, stderr=subprocess.STDOUT, start_new_session=True)
    svc = SlurmService(url=f"http://127.0.0.1:{port}", env=env, root=root, data=data, cluster=slurm_cluster)
    svc.start_worker()
    try:
        wait_healthy(f"{svc.url}/api/v1/health", api, timeout=90, describe=svc.logs)
        svc.token = new_token("alice", env)
        yield svc
    finally:
        stop(api)
        for w in svc.workers:
            stop(w, timeout=30)
        import sqlalchemy

        sqlalchemy.create_engine(pg_database).dispose()
