"""A database outage longer than a lease: the API answers 503 ``database_unavailable`` and recovers
by itself; the worker keeps training, buffers its metric points and writes them when the database
is back; its lease is not taken over by another worker (whose reconciler is idle beside it); the
job succeeds as attempt 1."""
from __future__ import annotations

import time

import pytest
import requests

from tests.helpers import wait_until

from .conftest import events, job_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 20


def test_database_outage_is_survived(make_stack, private_pg, private_redis, digits):
    stack = make_stack(private_redis.url)  # DISTILLERY_LEASE_S=6: the outage lasts more than 3 leases
    stack.start_api()
    stack.start_worker("worker")
    stack.start_worker("bystander")  # a second worker whose reconciler could take the job over
    job_id = stack.submit("outage", job_config(digits, epochs=2, log_every=1))
    run_dir = stack.run_dir(job_id, 1)
    wait_until(lambda: events(run_dir, "step"), 240, "the job to train", describe=stack.logs)

    private_pg.stop()
    down_at = time.time()
    try:
        r = stack.api("GET", f"/jobs/{job_id}")
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "database_unavailable"
        time.sleep(max(0.0, OUTAGE_S - (time.time() - down_at)))
    finally:
        private_pg.start()
    up_at = time.time()

    def answers() -> bool:
        try:
            return stack.api("GET", f"/jobs/{job_id}").status_code == 200
        except requests.RequestException:
            return False

    wait_until(answers, 30, "the API to answer again after the database came back", describe=stack.logs)
    job = stack.wait(job_id, timeout=300)
    assert job["attempt"] == 1, job["attempt_history"]
    assert [e["outcome"] for e in job["attempt_history"]] == ["succeeded"]

    steps = events(run_dir, "step")
    during = [e for e in steps if down_at < e["time"] < up_at]
    assert during, "the run should have trained while the database was down"
    stored = stack.sql("SELECT count(*) FROM metric_points WHERE job_id = :j AND name = 'loss'", j=job_id)[0][0]
    logged = sum(1 for e in events(run_dir, "step") + events(run_dir, "epoch") if "loss" in e)
    assert stored == logged, f"{stored} loss points stored, {logged} logged (the outage's points must be written later)"
    logs = "".join((stack.root / f"{name}.log").read_text() for name in ("worker", "bystander"))
    assert "database unavailable; training goes on" in logs and "lease renewed: True" in logs
