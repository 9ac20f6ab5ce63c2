"""Leases: a worker killed mid-run leaves no training behind, its job resumes on another worker as
attempt 2 (never alongside attempt 1), and a run that dies every time stops after max_attempts."""
from __future__ import annotations

import threading
import time

import psutil
import pytest

from tests.helpers import wait_until

from .conftest import attempt_processes, events, is_rank, job_config, kill9

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_killed_worker_job_resumes_as_attempt_2_never_alongside_attempt_1(make_stack, private_redis, digits):
    stack = make_stack(private_redis.url)
    stack.start_api()
    first = stack.start_worker("worker1")
    job_id = stack.submit("lease", job_config(digits, epochs=2))
    a1, a2 = stack.run_dir(job_id, 1), stack.run_dir(job_id, 2)

    together, sampling = [], threading.Event()

    def sample() -> None:  # from before the kill to the end: never processes of both attempts
        while not sampling.is_set():
            p1, p2 = attempt_processes(a1), attempt_processes(a2)
            if p1 and p2:
                together.append(([p.pid for p in p1], [p.pid for p in p2]))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wait_until(lambda: events(a1, "checkpoint"), 240, "attempt 1's first checkpoint", describe=stack.logs)
        assert attempt_processes(a1), "attempt 1 should be training"
        kill9(first)
        killed = time.monotonic()
        wait_until(lambda: not attempt_processes(a1), 30, "attempt 1's torchrun and ranks to exit after the worker's "
                   "SIGKILL", describe=lambda: str([p.cmdline() for p in attempt_processes(a1)]))
        stopped_s = time.monotonic() - killed
        assert stack.job(job_id)["state"] == "running"  # nobody decided yet: the lease still runs

        stack.start_worker("worker2")
        job = stack.wait(job_id, timeout=300)
    finally:
        sampling.set()
        sampler.join()
    assert not together, f"processes of attempts 1 and 2 alive at once: {together}"
    assert stopped_s < 30
    assert job["attempt"] == 2 and job["max_attempts"] == 3
    first_entry = job["attempt_history"][0]
    assert first_entry["attempt"] == 1 and first_entry["outcome"] == "lease_expired"
    assert first_entry["then"] == "restarted" and "lease" in first_entry["reason"]
    assert job["attempt_history"][-1]["outcome"] == "succeeded"
    start = events(a2, "start")
    assert len(start) == 1 and start[0]["resumed"] and start[0]["start_epoch"] >= 1, start
    assert len(events(a1, "start")) == 1
    assert "lease.json" in {p.name for p in a2.iterdir()}


def _rank_of(run_dir) -> psutil.Process | None:
    """The training process (a rank, not torchrun) of an attempt."""
    for p in attempt_processes(run_dir):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if is_rank(cmd):
            return p
    return None


def test_run_that_dies_every_time_runs_exactly_max_attempts_then_fails(make_stack, private_redis, digits):
    """As Determined tests max_restarts: the test SIGKILLs the training rank of every attempt as
    soon as it has started training; the job runs exactly max_attempts (2) times, then fails with
    the history. A user retry beyond DISTILLERY_MAX_RETRIES is refused."""
    stack = make_stack(private_redis.url, DISTILLERY_MAX_RETRIES="0")
    stack.start_api()
    stack.start_worker()
    job_id = stack.submit("crash", job_config(digits, epochs=3, max_attempts=2))
    for attempt in (1, 2):
        run_dir = stack.run_dir(job_id, attempt)
        rank = wait_until(lambda d=run_dir: events(d, "start") and _rank_of(d), 240,
                          f"attempt {attempt} to start training", describe=stack.logs)
        rank.kill()
    job = stack.wait(job_id, states=("failed",), timeout=120)
    assert job["attempt"] == 2
    assert [(e["attempt"], e["outcome"], e.get("then")) for e in job["attempt_history"]] == [
        (1, "failed", "restarted"), (2, "failed", None)]
    assert "max_attempts=2" in job["error"] and "training failed" in job["error"]
    time.sleep(3)  # nothing starts a third run
    assert not stack.run_dir(job_id, 3).exists() and stack.job(job_id)["state"] == "failed"

    r = stack.api("POST", f"/jobs/{job_id}/retry")
    assert r.status_code == 409 and r.json()["error"]["field"] == "attempt", r.text
