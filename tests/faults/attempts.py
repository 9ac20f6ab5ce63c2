"""Unit-level fault fixtures: a migrated database on the private PostgreSQL cluster (the production
database, with its row locks) and an attempt holding a real lease on a running job, so a fault
(a lease taken over, a predecessor's expired lease) can be set up exactly, without a stack."""
from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from server.db import Database
from server.models import Job, utcnow
from server.vocabulary import RUNNING
from tests.helpers import TINY_RECIPE, job_config, migrated_database
from worker.attempt import Attempt
from worker.lease import LeaseKeeper

log = logging.getLogger("tests.faults")


@pytest.fixture(scope="module")
def pg_db(private_pg):
    """A migrated database on the private cluster for a test module (migrating takes seconds on
    two shared cores), holding the user alice; each test makes its own jobs."""
    database = migrated_database(private_pg.create_database())
    yield database
    database.dispose()


def running_job(database: Database, owner: str, attempt: int = 1, expires_in_s: float = 60.0) -> int:
    """A teacher job running ``attempt`` under ``owner``'s lease (expired when ``expires_in_s`` < 0)."""
    now = utcnow()
    with database.session() as s:
        job = Job(owner_id=1, name="j", kind="teacher", config=job_config("teacher", "/data", TINY_RECIPE), state=RUNNING,
                  attempt=attempt, progress={}, metrics={}, attempt_history=[], lease_owner=owner, heartbeat_at=now,
                  lease_expires_at=now + timedelta(seconds=expires_in_s), max_attempts=3)
        s.add(job)
        s.flush()
        return job.id


def attempt_of(database: Database, job_id: int, owner: str, run_dir: Path, number: int = 1) -> Attempt:
    """The attempt a worker holds; its heartbeat is not started (the test plays it)."""
    keeper = LeaseKeeper(database, job_id, number, owner, 30.0, run_dir)
    return Attempt(database, job_id, number, owner, keeper, log, outage_s=5.0, retry_every_s=0.05)
