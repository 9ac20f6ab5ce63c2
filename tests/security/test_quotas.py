"""Issue 19 ("no user can hurt another"), items 1 and 3, on PostgreSQL through gunicorn: a user's cap on
jobs in flight holds against simultaneous submissions to several gunicorn workers and against sweeps
(their trials wait for a free slot), and a sweep the API accepts is one the worker can run: a seed or
step Optuna cannot take is a 400, and a sweep whose advance raises anyway ends failed with its slots
freed. No worker runs: the tests drive the sweeps' advance themselves (``worker.sweep.advance``, the
reconciler's call) and free slots by cancelling trials through the API.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from server.cli import free_port
from tests.helpers import wait_healthy
from tests.service.conftest import stop

from .test_attacks import job

pytestmark = pytest.mark.integration

CAP = 2
TRIALS = 8  # per sweep


@pytest.fixture(scope="module")
def crowd(api):
    """A second gunicorn on the same database and queue with several worker processes, so racing
    submissions meet in different processes, not only in threads of one."""
    port = free_port()
    with open(api.root / "crowd-api.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "distillery", "serve", "--port", str(port), "--workers", "3",
                                 "--threads", "4"], env=api.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api/v1/health", proc, timeout=90,
                     describe=lambda: (api.root / "crowd-api.log").read_text(errors="replace")[-3000:])
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def capped_user(api, name: str, cap: int = CAP) -> str:
    api.token(name)
    r = api.call("PUT", f"/users/{name}/limits", user="root", json={"max_jobs_in_flight": cap})
    assert r.status_code == 200, r.text
    return name


def in_flight(api, user: str) -> int:
    """What counts against the cap (server.quotas): the user's queued/running/exporting jobs, sweeps excepted."""
    return api.sql("SELECT count(*) FROM jobs j JOIN users u ON u.id = j.owner_id WHERE u.name = :u AND j.kind <> 'sweep' "
                   "AND j.state IN ('queued', 'running', 'exporting')", u=user)[0][0]


def test_twenty_simultaneous_submissions_at_a_cap_of_two_create_two(api, crowd):
    import requests

    user = capped_user(api, "racer")
    start, codes = threading.Barrier(20), []

    def submit() -> None:
        start.wait()
        r = requests.post(f"{crowd}/api/v1/jobs", json=job(str(api.data)), headers=api.h(user), timeout=120)
        codes.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "too_many_jobs" and r.json()["error"]["field"] == "kind", r.text

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201] * CAP + [429] * 18, codes
    assert in_flight(api, user) == CAP
    assert api.call("GET", f"/users/{user}/limits", user=user).json()["jobs_in_flight"] == CAP


# ----------------------------------------------------------------------------- sweeps
@pytest.fixture(scope="module")
def teacher_path(api) -> str:
    """A teacher checkpoint a sweep may name (under the data root); never loaded, as no worker runs."""
    path = api.root / "data" / "teacher.pth"
    path.write_bytes(b"not loaded: no worker runs here")
    return str(path)


def sweep_body(api, teacher_path: str, **over) -> dict:
    cfg = job(str(api.data))["config"]
    cfg = {**cfg, "kind": "distill", "student": {"model": "deit_tiny_distilled_patch16_224"},
           "distillation": {"type": "hard"}, "teacher": {**cfg["teacher"], "checkpoint": teacher_path}}
    return {"kind": "sweep", "name": "greedy-sweep", "config": cfg, "search_space": {"alpha": {"low": 0.1, "high": 0.9}},
            "trials": TRIALS, "parallel": TRIALS, "teacher_outputs": False, **over}


@pytest.fixture(scope="module")
def driver(api):
    """What a worker's reconciler calls each tick: ``advance(celery, settings, database, sweep_id)``,
    with the service's own settings, database and queue."""
    from server.db import Database
    from server.queue import make_celery
    from server.settings import Settings

    settings = Settings.from_env(api.env)
    database = Database(settings.database_url)
    yield make_celery(settings), settings, database
    database.dispose()


def advance(driver, sweep_id: int):
    from worker.sweep import advance as advance_sweep

    return advance_sweep(*driver, sweep_id)


@pytest.mark.parametrize("over, field", [
    ({"seed": 2147483647}, "seed"),
    ({"seed": 42949}, "seed"),
    ({"search_space": {"alpha": {"low": 0.2, "high": 0.8, "step": 1e-300}}}, "search_space.alpha.step"),
])
def test_a_sweep_the_worker_could_not_run_is_refused(api, teacher_path, over, field):
    api.token("sweeper")
    r = api.call("POST", "/jobs", user="sweeper", json=sweep_body(api, teacher_path, **over))
    assert r.status_code == 400 and r.json()["error"]["field"] == field, r.text
    assert in_flight(api, "sweeper") == 0 and not api.sql("SELECT id FROM jobs j WHERE j.name = 'greedy-sweep' "
                                                          "AND j.owner_id = (SELECT id FROM users WHERE name = 'sweeper')")


def test_two_wide_sweeps_under_a_cap_of_two_never_pass_it(api, teacher_path, driver):
    """Two sweeps of 8 trials, parallel 8, under a cap of 2, advanced at once from two threads
    while a third, each time the cap is full, cancels a trial through the API (what a finishing
    trial does to the count), and the in-flight count is sampled throughout: never above 2, and
    every trial is started in the end."""
    user = capped_user(api, "sweeper2")
    ids = []
    for name in ("wide-a", "wide-b"):
        r = api.call("POST", "/jobs", user=user, json={**sweep_body(api, teacher_path), "name": name})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    api.sql("UPDATE jobs SET state = 'running' WHERE id IN (:a, :b)", a=ids[0], b=ids[1])  # worker.sweep.start's claim
    samples, done = [], threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(in_flight(api, user))

    def drive(sweep_id: int) -> None:
        while not done.is_set() and advance(driver, sweep_id) not in ("failed", "succeeded"):
            time.sleep(0.05)

    def free_slots() -> None:  # once the cap is full (the sweeps have tried to pass it a while), or all trials exist
        while not done.is_set():
            time.sleep(0.3)
            if in_flight(api, user) < CAP and created(api, ids) < 2 * TRIALS:
                continue
            for (trial,) in api.sql("SELECT j.id FROM jobs j WHERE j.parent_id IN (:a, :b) AND j.state = 'queued' "
                                    "ORDER BY j.id LIMIT 1", a=ids[0], b=ids[1]):
                assert api.call("POST", f"/jobs/{trial}/cancel", user=user).status_code == 202

    threads = [threading.Thread(target=f, args=a, daemon=True) for f, a in
               ((sample, ()), (drive, (ids[0],)), (drive, (ids[1],)), (free_slots, ()))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(s != "failed" for s in states(api, ids)):
        time.sleep(0.5)
    done.set()
    for t in threads:
        t.join(timeout=60)
    assert states(api, ids) == ["failed", "failed"], "sweeps still running after 300 s"  # every trial cancelled
    assert samples and max(samples) <= CAP, f"{max(samples)} jobs in flight at a cap of {CAP}"
    assert max(samples) == CAP  # the cap was reached, not just never approached
    assert created(api, ids) == 2 * TRIALS  # the sweeps waited for slots and then started every trial
    assert api.call("GET", f"/jobs/{ids[0]}", user=user).json()["error"].startswith("no trial succeeded")


def created(api, ids: list[int]) -> int:
    return api.sql("SELECT count(*) FROM jobs WHERE parent_id IN (:a, :b)", a=ids[0], b=ids[1])[0][0]


def states(api, ids: list[int]) -> list[str]:
    return [api.call("GET", f"/jobs/{i}", user="root").json()["state"] for i in ids]


def test_a_sweep_whose_advance_raises_fails_and_frees_its_slots(api, teacher_path, driver):
    """A sweep stored before its seed was checked (this seed was a 201): numpy refuses its sampler's
    seed on every pass. It ends failed saying why, its trials are cancelled, the slots are free."""
    user = capped_user(api, "sweeper3")
    r = api.call("POST", "/jobs", user=user, json={**sweep_body(api, teacher_path), "name": "doomed"})
    assert r.status_code == 201, r.text
    sweep_id = r.json()["id"]
    api.sql("UPDATE jobs SET state = 'running' WHERE id = :i", i=sweep_id)
    assert advance(driver, sweep_id) == "running" and in_flight(api, user) == CAP
    api.sql("UPDATE jobs SET config = jsonb_set(config::jsonb, '{seed}', '2147483647')::json WHERE id = :i", i=sweep_id)
    assert advance(driver, sweep_id) == "failed"
    sweep = api.call("GET", f"/jobs/{sweep_id}", user=user).json()
    assert sweep["state"] == "failed" and "Seed must be between 0 and 2**32 - 1" in sweep["error"], sweep["error"]
    assert in_flight(api, user) == 0
    assert {s for (s,) in api.sql("SELECT state FROM jobs WHERE parent_id = :i", i=sweep_id)} == {"cancelled"}
    assert advance(driver, sweep_id) is None  # no longer advanced: no traceback every tick
    assert api.call("POST", "/jobs", user=user, json=job(str(api.data))).status_code == 201  # the slot is back
