"""V4: a lease owner names the worker *process*. A worker restarted under its predecessor's name
(``DISTILLERY_WORKER_NAME``) used to own its leases under the very same ``name#attempt``, so its
reconciler took the dead predecessor's expired lease for one of its own and never judged it: the
job sat ``exporting`` with no process. Now the expired lease is taken over whoever held it; the
job restarted there also has the files its dead attempt linked but never registered swept (V2)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from server.models import Job
from server.queue import make_celery
from server.settings import Settings
from server.vocabulary import EXPORTING, QUEUED, RUNNING
from worker.lease import LeaseKeeper, LocalLeases, lease_owner
from worker.reconciler import Reconciler

from . import attempts
from .attempts import running_job

pytestmark = [pytest.mark.integration]

pg_db = attempts.pg_db  # the fixture
NAME = "gpu-box-1"  # DISTILLERY_WORKER_NAME, the same for the dead worker and its successor


def predecessors_owner(attempt: int) -> str:
    """The owner a worker process of the same name (now gone) gave its lease of ``attempt``."""
    code = f"from worker.lease import lease_owner; print(lease_owner({NAME!r}, {attempt}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_owners_of_two_processes_of_one_worker_name_differ():
    dead = predecessors_owner(2)
    assert dead != lease_owner(NAME, 2) and dead.startswith(f"{NAME}/") and dead.endswith("#2")
    assert lease_owner(NAME, 2) == lease_owner(NAME, 2)  # stable within the process: heartbeats find it


def test_a_restarted_worker_takes_over_its_namesakes_expired_lease(pg_db, tmp_path):
    settings = Settings.from_env({"DISTILLERY_DATABASE_URL": str(pg_db.engine.url.render_as_string(hide_password=False)),
                                  "DISTILLERY_STORAGE": str(tmp_path / "storage"),
                                  "DISTILLERY_BROKER_DIR": str(tmp_path / "broker"), "DISTILLERY_LEASE_S": "2",
                                  "DISTILLERY_WORKER_NAME": NAME})
    settings.ensure_dirs()
    dead = running_job(pg_db, predecessors_owner(2), attempt=2, expires_in_s=-30)  # died while exporting
    with pg_db.session() as s:
        s.get(Job, dead).state = EXPORTING
    stray = settings.artifacts_path / str(dead) / "attempt-2" / "model.ptl"  # linked, row never committed
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"ptl")

    local = LocalLeases()  # this process (the successor) holds attempt 2 of another job
    mine = lease_owner(NAME, 2)
    alive = running_job(pg_db, mine, attempt=2)
    keeper = LeaseKeeper(pg_db, alive, 2, mine, settings.lease_s, tmp_path / "run", local)
    keeper.start()
    try:
        reconciler = Reconciler(make_celery(settings), settings, pg_db, local)
        done = reconciler.sweep()  # sees the expired lease ...
        assert done["restarted"] == []
        time.sleep(settings.lease_s / 2 + 0.1)
        done = reconciler.sweep()  # ... and takes it over half a lease later
    finally:
        keeper.stop()
    assert done["restarted"] == [dead]
    with pg_db.session() as s:
        job = s.get(Job, dead)
        assert (job.state, job.attempt, job.attempt_history[-1]["outcome"]) == (QUEUED, 3, "lease_expired")
        assert s.get(Job, alive).state == RUNNING  # its own lease is never judged
    assert not stray.exists()
