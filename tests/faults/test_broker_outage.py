"""V3: a ``POST /jobs`` while the broker (a private Redis) is down is accepted: 201, the job stays
``queued`` with a warning, and the reconciler sends it once the broker is back. It used to answer
503 and leave the row ``failed: could not queue``, though the reconciler would have sent it."""
from __future__ import annotations

import pytest

from server.db import Database
from server.queue import make_celery
from server.settings import Settings
from worker.lease import LocalLeases
from worker.reconciler import Reconciler, broker_messages

from .conftest import job_config

pytestmark = [pytest.mark.integration]


def test_a_submission_during_a_broker_outage_stays_queued_and_the_reconciler_sends_it(make_stack, private_redis, digits):
    stack = make_stack(private_redis.url)
    stack.start_api()
    private_redis.stop()

    config = job_config(digits, epochs=1)
    r = stack.api("POST", "/jobs", json={"kind": config["kind"], "name": "in-outage", "config": config})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert r.json()["state"] == "queued" and r.json()["error"] is None
    assert any(w["field"] == "queue" and "stay queued" in w["message"] for w in r.json()["warnings"]), r.json()["warnings"]
    assert stack.sql("SELECT state, enqueued_at, task_id FROM jobs WHERE id = :i", i=job_id) == [("queued", None, None)]

    private_redis.start()  # back, on the same port
    settings = Settings.from_env(stack.env)
    database = Database(settings.database_url)
    try:
        done = Reconciler(make_celery(settings), settings, database, LocalLeases()).sweep()
    finally:
        database.dispose()
    assert done["resent"] == [job_id]
    (state, task_id), = stack.sql("SELECT state, task_id FROM jobs WHERE id = :i", i=job_id)
    assert state == "queued" and task_id and task_id.encode() in broker_messages(settings)
