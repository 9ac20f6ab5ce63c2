"""Issue 19: the cap on a user's jobs in flight, on SQLite and without a service: submissions racing
each other stop at the cap (counted and inserted under one lock), a sweep's trials wait for a free
slot instead of passing it, and a sweep whose advance raises ends failed with its slots freed.
The same on PostgreSQL through gunicorn: tests/security/test_quotas.py."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import update

from server import lifecycle, quotas
from server.job_spec import JobSpec
from server.models import Job, User
from server.queue import make_celery
from server.settings import Settings
from server.sweeps import validate_sweep
from server.vocabulary import ACTIVE_STATES, CANCELLED, DISTILL, FAILED, RUNNING, SWEEP, TEACHER
from tests.helpers import TINY_RECIPE, job_config

CAP = 2


@pytest.fixture
def settings(sqlite_db, tmp_path) -> Settings:
    return Settings(database_url=sqlite_db.url, storage=str(tmp_path / "storage"), broker_url="filesystem://",
                    broker_dir=str(tmp_path / "broker"), max_jobs_in_flight=CAP)


def teacher_spec(name: str) -> JobSpec:
    return JobSpec(TEACHER, name, job_config("teacher", "/data/digits", {**TINY_RECIPE, "epochs": 1}))


def in_flight(database) -> int:
    with database.session() as s:
        return quotas.in_flight(s, s.get(User, 1))


def test_racing_submissions_on_sqlite_stop_at_the_cap(sqlite_db, settings):
    """Twelve threads, each its own connection, submit at once: exactly CAP are created."""
    start, outcomes = threading.Barrier(12), []

    def submit(i: int) -> None:
        start.wait()
        try:
            with sqlite_db.session() as s:
                lifecycle.create_jobs(s, s.get(User, 1), [teacher_spec(f"t{i}")], settings)
            outcomes.append("created")
        except quotas.QuotaExceeded as e:
            outcomes.append(e.message)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("created") == CAP, outcomes
    assert all(f"at most {CAP} may be in flight" in o for o in outcomes if o != "created")
    assert in_flight(sqlite_db) == CAP


def test_a_submission_over_the_cap_writes_nothing(sqlite_db, settings):
    with sqlite_db.session() as s:
        with pytest.raises(quotas.QuotaExceeded):
            lifecycle.create_jobs(s, s.get(User, 1), [teacher_spec(f"t{i}") for i in range(CAP + 1)], settings)
    assert in_flight(sqlite_db) == 0


def sweep_config(**over) -> dict:
    from deit_core.config import parse_config

    base = parse_config(job_config("distill", "/data/digits", {**TINY_RECIPE, "epochs": 1}, checkpoint=7),
                        check_paths=False).to_dict()
    body = {"search_space": {"alpha": {"low": 0.1, "high": 0.9}}, "trials": 12, "parallel": 12,
            "teacher_outputs": False, **over}
    return validate_sweep(body, base, 200)


def submit_sweep(database, settings) -> int:
    with database.session() as s:
        (job,) = lifecycle.create_jobs(s, s.get(User, 1), [JobSpec(SWEEP, "sw", sweep_config())], settings)
        s.execute(update(Job).where(Job.id == job.id).values(state=RUNNING))  # what worker.sweep.start does
        return job.id


def children(database, sweep_id: int, states=ACTIVE_STATES) -> list[int]:
    with database.session() as s:
        return sorted(j.id for j in s.query(Job).filter(Job.parent_id == sweep_id, Job.state.in_(states)))


def test_a_sweep_counts_nothing_itself_and_its_trials_wait_for_a_free_slot(sqlite_db, settings):
    from worker.sweep import WAITING, advance

    celery = make_celery(settings)
    first, second = submit_sweep(sqlite_db, settings), submit_sweep(sqlite_db, settings)
    assert in_flight(sqlite_db) == 0  # the sweeps themselves hold no slot
    for _ in range(3):
        for sweep_id in (first, second):
            advance(celery, settings, sqlite_db, sweep_id)
            assert in_flight(sqlite_db) == CAP
    assert len(children(sqlite_db, first)) == CAP and children(sqlite_db, second) == []  # parallel 12, cap 2
    with sqlite_db.session() as s:
        assert s.get(Job, second).progress["phase"] == WAITING
        lifecycle.cancel(s, celery, s.get(Job, children(sqlite_db, first)[0]), by="alice", settings=settings)
    assert in_flight(sqlite_db) == CAP - 1
    advance(celery, settings, sqlite_db, second)  # the freed slot: the waiting sweep's first trial
    assert in_flight(sqlite_db) == CAP and len(children(sqlite_db, second)) == 1
    with sqlite_db.session() as s:  # a submission sees the full cap too
        with pytest.raises(quotas.QuotaExceeded):
            lifecycle.create_jobs(s, s.get(User, 1), [teacher_spec("late")], settings)
        other = User(name="bob")
        s.add(other)
        s.commit()
        lifecycle.create_jobs(s, other, [teacher_spec("bob's")], settings)  # the cap is alice's alone


def test_a_sweep_whose_advance_raises_fails_with_the_error_and_frees_its_slots(sqlite_db, settings):
    """A sweep stored before the seed was checked (seed 2**31 - 1: numpy refuses its sampler seed)."""
    from worker.sweep import advance

    celery = make_celery(settings)
    sweep_id = submit_sweep(sqlite_db, settings)
    advance(celery, settings, sqlite_db, sweep_id)
    trials = children(sqlite_db, sweep_id)
    assert len(trials) == CAP
    with sqlite_db.session() as s:
        job = s.get(Job, sweep_id)
        s.execute(update(Job).where(Job.id == sweep_id).values(config={**job.config, "seed": 2**31 - 1}))
    assert advance(celery, settings, sqlite_db, sweep_id) == FAILED
    with sqlite_db.session() as s:
        job = s.get(Job, sweep_id)
        assert job.state == FAILED and "advancing the sweep failed" in job.error and "Seed must be" in job.error
        assert job.lease_owner is None
        assert {s.get(Job, i).state for i in trials} == {CANCELLED}
    assert in_flight(sqlite_db) == 0  # its slots are free
    assert advance(celery, settings, sqlite_db, sweep_id) is None  # ended: no pass, no traceback, each tick


def test_what_a_submission_needs_free():
    plain, sweep = teacher_spec("t"), JobSpec(SWEEP, "s", {})
    assert quotas.slots_needed([plain, JobSpec(DISTILL, "d", {})]) == 2
    assert quotas.slots_needed([sweep]) == 1  # admitted only with a slot free, though it holds none
