"""The queue cannot lose a job: Redis restarted (no persistence: every message gone) while one job
runs and one waits. The reconciler re-sends the lost message; the claim's compare-and-set makes any
duplicate harmless: 0 jobs lost, 0 run twice."""
from __future__ import annotations

import pytest

from tests.helpers import wait_until

from .conftest import events, job_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_redis_restart_loses_no_job_and_runs_none_twice(make_stack, private_redis, digits):
    stack = make_stack(private_redis.url)
    stack.start_api()
    stack.start_worker()  # concurrency 1: the second job waits in the queue while the first runs
    running = stack.submit("running", job_config(digits, epochs=1))
    waiting = stack.submit("waiting", job_config(digits, epochs=1))
    wait_until(lambda: events(stack.run_dir(running, 1), "step"), 240, "the first job to train", describe=stack.logs)
    assert stack.job(waiting)["state"] == "queued"

    private_redis.restart()  # every queued (and reserved) message is gone

    for job_id in (running, waiting):
        job = stack.wait(job_id, timeout=300)
        assert job["attempt"] == 1, job["attempt_history"]
        assert [e["outcome"] for e in job["attempt_history"]] == ["succeeded"]
        runs = sorted(p.name for p in stack.run_dir(job_id, 1).parent.iterdir() if p.is_dir())
        assert runs == ["attempt-1"], runs
        assert len(events(stack.run_dir(job_id, 1), "start")) == 1  # trained once
        assert len(events(stack.run_dir(job_id, 1), "done")) == 1
    log = (stack.root / "worker.log").read_text()
    assert f"job {waiting}: queued since" in log and "sent it again" in log, stack.logs()
