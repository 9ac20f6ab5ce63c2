"""Every job life-cycle transition (server.lifecycle) and every lease function (server.leases), on a
migrated SQLite file in a tmp dir: no service, no broker, no training. The broker is a recorder of
what would have been sent (``SentTasks``), standing in for Celery's sending side only."""
from __future__ import annotations

import itertools
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import update

from server import leases, lifecycle
from server.job_spec import JobSpec, ParentRef
from server.models import Job, User, utcnow
from server.settings import Settings
from server.vocabulary import (
    CANCELLED,
    DISTILL,
    EXPORTING,
    FAILED,
    LEASE_LOST,
    PRUNED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TEACHER,
    TEACHER_OUTPUTS,
)


class SentTasks:
    """Celery's sending side as lifecycle uses it: ``send_task`` and ``control.revoke``."""

    def __init__(self, fail: bool = False):
        self.sent: list[tuple[str, list, str]] = []
        self.revoked: list[str] = []
        self.fail = fail
        self._ids = itertools.count(1)
        self.control = SimpleNamespace(revoke=self.revoked.append)

    def send_task(self, name, args, queue, priority):
        if self.fail:
            raise ConnectionError("broker away")
        self.sent.append((name, args, queue))
        return SimpleNamespace(id=f"task-{next(self._ids)}")

    def job_ids(self) -> list[int]:
        return [args[0] for _, args, _ in self.sent]


@pytest.fixture
def db(sqlite_session):
    return sqlite_session


@pytest.fixture
def settings(tmp_path):
    return Settings(database_url="sqlite://", storage=str(tmp_path), broker_url="redis://127.0.0.1:1/0", max_retries=1)


def cfg(checkpoint=7, max_attempts=3) -> dict:
    return {"teacher": {"checkpoint": checkpoint}, "distillation": {"type": "hard", "teacher_cache": "auto"},
            "resources": {"max_attempts": max_attempts}}


def user(db) -> User:
    return db.get(User, 1)


def add(db, state=QUEUED, attempt=1, **values) -> Job:
    values = {"config": cfg(), "progress": {}, "metrics": {}, "attempt_history": [], **values}
    job = Job(kind=values.pop("kind", DISTILL), name="j", owner_id=1, state=state, attempt=attempt, **values)
    db.add(job)
    db.commit()
    return job


def running(db, owner="w1:1", expires_in=60.0, **values) -> Job:
    now = utcnow()
    return add(db, RUNNING, lease_owner=owner, heartbeat_at=now, started_at=now, worker="w1",
               lease_expires_at=now + timedelta(seconds=expires_in), **values)


def fresh(db, job: Job) -> Job:
    db.expire_all()
    return db.get(Job, job.id)


# ---------------------------------------------------------------------------------------------
# create, enqueue, submit
# ---------------------------------------------------------------------------------------------
def test_create_jobs_links_parents_by_index_or_id_and_a_baseline(db):
    existing = add(db, SUCCEEDED)
    specs = [JobSpec(TEACHER, "t", cfg(None)),
             JobSpec(TEACHER_OUTPUTS, "o", cfg(None), parent=ParentRef.earlier(0)),
             JobSpec(DISTILL, "s", cfg(None), parent=ParentRef.earlier(1), priority="low"),
             JobSpec(DISTILL, "b", cfg(None), baseline_of=2),
             JobSpec(DISTILL, "x", cfg(5, max_attempts=1), parent=ParentRef.existing(existing.id))]
    t, o, s, b, x = lifecycle.create_jobs(db, user(db), specs)
    assert (o.parent_id, s.parent_id, b.parent_id, b.baseline_of, x.parent_id) == (t.id, o.id, None, s.id, existing.id)
    assert (s.priority, t.priority, x.max_attempts, t.max_attempts) == ("low", "normal", 1, 3)
    assert all(j.state == QUEUED and j.attempt == 1 and j.stop_reason is None for j in (t, o, s, b, x))


def test_create_jobs_takes_a_sweep_trial_spec(db):
    sweep = add(db, RUNNING, kind="sweep")
    spec = JobSpec(DISTILL, "t-0", cfg(), parent=ParentRef.existing(sweep.id), trial_number=0, priority="high")
    (job,) = lifecycle.create_jobs(db, user(db), [spec])
    assert (job.parent_id, job.trial_number, job.priority) == (sweep.id, 0, "high")


def test_a_parent_ref_names_one_job_and_only_an_earlier_spec():
    with pytest.raises(ValueError):
        ParentRef(index=0, job_id=3)
    with pytest.raises(ValueError):
        ParentRef()


def test_a_spec_cannot_name_a_later_spec(db):
    with pytest.raises(ValueError, match="spec 1"):
        lifecycle.create_jobs(db, user(db), [JobSpec(DISTILL, "s", cfg(), parent=ParentRef.earlier(1)),
                                             JobSpec(TEACHER, "t", cfg())])


def test_enqueue_records_the_task_and_when(db, settings):
    job, celery = add(db), SentTasks()
    task_id = lifecycle.enqueue(db, celery, settings, job.id)
    job = fresh(db, job)
    assert (job.task_id, celery.job_ids()) == (task_id, [job.id]) and job.enqueued_at is not None


def test_submit_queues_all_but_jobs_waiting_for_their_teacher(db, settings):
    celery = SentTasks()
    jobs = lifecycle.submit(db, celery, settings, user(db), [JobSpec(TEACHER, "t", cfg(None)),
                                                             JobSpec(DISTILL, "s", cfg(None), parent=ParentRef.earlier(0))])
    assert celery.job_ids() == [jobs[0].id]
    assert lifecycle.waits_for_teacher(jobs[1])


def test_submit_leaves_a_job_the_broker_cannot_take_queued_for_the_reconciler(db, settings):
    jobs = lifecycle.submit(db, SentTasks(fail=True), settings, user(db), [JobSpec(TEACHER, "t", cfg(None))])
    job = db.get(Job, jobs[0].id)
    db.refresh(job)
    assert (job.state, job.error, job.enqueued_at) == (QUEUED, None, None)  # None: the reconciler sends it now


# ---------------------------------------------------------------------------------------------
# claim, finish
# ---------------------------------------------------------------------------------------------
def test_claim_takes_the_attempt_and_its_lease_once(db):
    job = add(db, attempt=2)
    assert not lifecycle.claim(db, job.id, 1, "w1", "/run", "w1:1", 30)  # a late delivery of attempt 1
    assert lifecycle.claim(db, job.id, 2, "w1", "/run", "w1:1", 30)
    assert not lifecycle.claim(db, job.id, 2, "w2", "/run", "w2:1", 30)  # delivered twice
    job = fresh(db, job)
    assert (job.state, job.worker, job.lease_owner, job.run_dir) == (RUNNING, "w1", "w1:1", "/run")
    assert job.lease_expires_at > job.heartbeat_at == job.started_at


def test_finish_succeeds_under_the_lease_only(db):
    job = running(db, progress={"epoch": 2})
    assert not lifecycle.finish(db, job.id, SUCCEEDED, lease=(1, "someone-else"))
    assert not lifecycle.finish(db, job.id, SUCCEEDED, lease=(2, "w1:1"))
    assert lifecycle.finish(db, job.id, SUCCEEDED, lease=(1, "w1:1"))
    job = fresh(db, job)
    assert (job.state, job.stop_reason, job.lease_expires_at, job.progress["fraction"]) == (SUCCEEDED, None, None, 1.0)
    assert job.finished_at is not None and [e["outcome"] for e in job.attempt_history] == [SUCCEEDED]
    assert not lifecycle.finish(db, job.id, FAILED)  # ended: nothing moves it again


@pytest.mark.parametrize("state", [FAILED, CANCELLED, PRUNED])
def test_finish_records_why_it_stopped(db, state):
    job = running(db)
    assert lifecycle.finish(db, job.id, state, error="x" * 5000, lease=(1, "w1:1"))
    job = fresh(db, job)
    assert (job.state, job.stop_reason, len(job.error)) == (state, state, 4000)


# ---------------------------------------------------------------------------------------------
# cancel, prune
# ---------------------------------------------------------------------------------------------
def test_cancel_a_queued_job_revokes_its_message_and_cancels_its_waiting_children(db, settings):
    job = add(db, task_id="task-9")
    child = add(db, parent_id=job.id, config=cfg(None))
    grandchild = add(db, parent_id=child.id, config=cfg(None))
    celery = SentTasks()
    lifecycle.cancel(db, celery, job, by="alice", settings=settings)
    assert celery.revoked == ["task-9"]
    for j, error in ((job, "cancelled by alice"), (child, f"teacher job {job.id} was cancelled"),
                     (grandchild, f"teacher job {child.id} was cancelled")):
        j = fresh(db, j)
        assert (j.state, j.stop_reason, j.error) == (CANCELLED, CANCELLED, error)


def test_cancel_does_not_revoke_on_a_broker_without_broadcasts(db, tmp_path):
    job, celery = add(db, task_id="task-9"), SentTasks()
    lifecycle.cancel(db, celery, job, by="alice", settings=Settings(storage=str(tmp_path), broker_url="filesystem://"))
    assert celery.revoked == [] and fresh(db, job).state == CANCELLED
    other = add(db, task_id="task-10")
    lifecycle.cancel(db, celery, other, by="sweep 3")  # no settings: no revoke either
    assert celery.revoked == [] and fresh(db, other).state == CANCELLED


@pytest.mark.parametrize("state", [RUNNING, EXPORTING])
def test_cancel_a_running_job_flags_it_for_its_worker(db, settings, state):
    job = running(db)
    db.execute(update(Job).where(Job.id == job.id).values(state=state))
    db.commit()
    lifecycle.cancel(db, SentTasks(), fresh(db, job), by="alice", settings=settings)
    job = fresh(db, job)
    assert (job.state, job.cancel_requested, job.stop_reason) == (state, True, CANCELLED)
    assert lifecycle.stop_outcome(job) == (CANCELLED, "cancelled by user")


@pytest.mark.parametrize("state", [SUCCEEDED, FAILED, CANCELLED, PRUNED])
def test_cancel_an_ended_job_is_a_conflict(db, settings, state):
    job = add(db, state, stop_reason=None if state == SUCCEEDED else state)
    with pytest.raises(lifecycle.JobConflict) as e:
        lifecycle.cancel(db, SentTasks(), job, by="alice", settings=settings)
    assert e.value.field == "state" and fresh(db, job).state == state


def test_prune_stops_a_trial_by_stop_reason_not_by_its_error_text(db):
    queued, trial = add(db, trial_number=0), running(db, trial_number=1)
    plain = running(db)
    assert lifecycle.prune(db, queued, "pruned by sweep 3 at epoch 1")
    assert lifecycle.prune(db, trial, "median pruner: val top-1 12%")  # any wording
    assert not lifecycle.prune(db, plain, "pruned by sweep 3")  # not a trial
    assert (fresh(db, queued).state, fresh(db, queued).stop_reason) == (PRUNED, PRUNED)
    trial = fresh(db, trial)
    assert (trial.state, trial.cancel_requested, trial.stop_reason) == (RUNNING, True, PRUNED)
    assert lifecycle.stop_outcome(trial) == (PRUNED, "median pruner: val top-1 12%")
    user_cancelled = running(db, trial_number=2, error="pruned by sweep, said the user", stop_reason=CANCELLED)
    assert lifecycle.stop_outcome(user_cancelled)[0] == CANCELLED


def test_prune_leaves_an_ended_trial_alone(db):
    job = add(db, SUCCEEDED, trial_number=0)
    assert not lifecycle.prune(db, job, "pruned by sweep")
    assert (fresh(db, job).state, fresh(db, job).stop_reason) == (SUCCEEDED, None)


# ---------------------------------------------------------------------------------------------
# retry, new_attempt, restart_or_fail
# ---------------------------------------------------------------------------------------------
def test_retry_queues_attempt_2_fresh_and_counts_user_retries(db, settings):
    job = add(db, FAILED, error="boom", stop_reason=FAILED, worker="w1", task_id="old")
    celery = SentTasks()
    lifecycle.retry(db, celery, settings, job)
    job = fresh(db, job)
    assert (job.state, job.attempt, job.error, job.stop_reason, job.worker) == (QUEUED, 2, None, None, None)
    assert job.attempt_history[-1]["then"] == lifecycle.RETRIED and celery.job_ids() == [job.id]
    db.execute(update(Job).where(Job.id == job.id).values(state=CANCELLED))
    db.commit()
    with pytest.raises(lifecycle.JobConflict) as e:  # max_retries=1
        lifecycle.retry(db, celery, settings, fresh(db, job))
    assert e.value.field == "attempt"


def test_retry_refuses_running_jobs_and_students_without_a_teacher(db, settings):
    with pytest.raises(lifecycle.JobConflict) as e:
        lifecycle.retry(db, SentTasks(), settings, running(db))
    assert e.value.field == "state"
    teacher = add(db, FAILED)
    with pytest.raises(lifecycle.JobConflict) as e:
        lifecycle.retry(db, SentTasks(), settings, add(db, CANCELLED, parent_id=teacher.id, config=cfg(None)))
    assert e.value.field == "parent_id"


def test_new_attempt_is_a_compare_and_set_on_the_attempt(db, settings):
    job, celery = running(db, attempt=3), SentTasks()
    assert not lifecycle.new_attempt(db, celery, settings, job.id, (RUNNING,), 2)
    assert not lifecycle.new_attempt(db, celery, settings, job.id, (RUNNING,), 3, where=leases.lease_held(3, "w2:1"))
    assert lifecycle.new_attempt(db, celery, settings, job.id, (RUNNING,), 3, then=lifecycle.HANDED_BACK,
                                 outcome="worker_stopped", reason="shut down")
    job = fresh(db, job)
    assert (job.state, job.attempt, job.lease_owner, celery.job_ids()) == (QUEUED, 4, None, [job.id])
    assert job.attempt_history == [{**job.attempt_history[0], "attempt": 3, "outcome": "worker_stopped",
                                    "reason": "shut down", "then": lifecycle.HANDED_BACK}]


def test_restart_or_fail_restarts_until_max_attempts_then_fails(db, settings):
    job, celery = running(db, config=cfg(max_attempts=2), max_attempts=2), SentTasks()
    assert lifecycle.restart_or_fail(db, celery, settings, job.id, 1, FAILED, "crashed") == lifecycle.RESTARTED
    assert fresh(db, job).attempt == 2
    assert lifecycle.claim(db, job.id, 2, "w1", "/run", "w1:2", 30)
    assert lifecycle.restart_or_fail(db, celery, settings, job.id, 2, FAILED, "crashed",
                                     where=leases.lease_held(2, "w1:2")) == FAILED
    job = fresh(db, job)
    assert (job.state, job.stop_reason, celery.job_ids()) == (FAILED, FAILED, [job.id])
    assert "gave up after 2 attempt(s)" in job.error


def test_restart_or_fail_after_an_expired_lease_says_lease_lost(db, settings):
    job = running(db, max_attempts=1, expires_in=-5)
    (_, attempt, owner, expires), = leases.expired_leases(db)
    where = leases.lease_expired_where(owner, expires)
    assert lifecycle.restart_or_fail(db, SentTasks(), settings, job.id, attempt, lifecycle.LEASE_EXPIRED, "gone",
                                     where=where) == FAILED
    assert (fresh(db, job).state, fresh(db, job).stop_reason) == (FAILED, LEASE_LOST)


def test_restart_or_fail_loses_to_whoever_changed_the_job_first(db, settings):
    job = running(db)
    assert lifecycle.restart_or_fail(db, SentTasks(), settings, job.id, 1, FAILED, "x",
                                     where=leases.lease_held(1, "w9:9")) is None
    assert fresh(db, job).state == RUNNING


# ---------------------------------------------------------------------------------------------
# a teacher's children
# ---------------------------------------------------------------------------------------------
def test_release_children_gives_waiting_students_the_checkpoint_and_cache(db, settings):
    teacher = running(db, kind=TEACHER_OUTPUTS)
    child = add(db, parent_id=teacher.id, config=cfg(None))
    started = add(db, parent_id=teacher.id, config=cfg(3))  # not waiting: left alone
    celery = SentTasks()
    assert lifecycle.release_children(db, celery, settings, teacher, 42, lease=(1, "w1:1"), teacher_cache="c1") == [child.id]
    child = fresh(db, child)
    assert child.config["teacher"]["checkpoint"] == 42 and child.config["distillation"]["teacher_cache"] == "c1"
    assert celery.job_ids() == [child.id] and fresh(db, started).config["teacher"]["checkpoint"] == 3


def test_release_children_without_the_lease_releases_nothing(db, settings):
    teacher = running(db, kind=TEACHER)
    child = add(db, parent_id=teacher.id, config=cfg(None))
    assert lifecycle.release_children(db, SentTasks(), settings, teacher, 42, lease=(1, "w2:1")) == []
    assert lifecycle.waits_for_teacher(fresh(db, child))


def test_fail_children_fails_the_whole_waiting_chain(db):
    teacher = add(db, FAILED, kind=TEACHER)
    outputs = add(db, parent_id=teacher.id, kind=TEACHER_OUTPUTS, config=cfg(None))
    student = add(db, parent_id=outputs.id, config=cfg(None))
    other = add(db, parent_id=teacher.id, config=cfg(4))  # has its checkpoint: not waiting
    assert lifecycle.fail_children(db, teacher, "failed") == [outputs.id, student.id]
    assert (fresh(db, student).state, fresh(db, student).stop_reason) == (FAILED, FAILED)
    assert fresh(db, other).state == QUEUED


# ---------------------------------------------------------------------------------------------
# leases
# ---------------------------------------------------------------------------------------------
def test_renew_lease_extends_it_while_held_even_after_expiry(db):
    job = running(db, expires_in=-5)  # expired, but nobody took it over yet: the heartbeat may still renew it
    assert leases.renew_lease(db, job.id, 1, "w1:1", 30)
    assert fresh(db, job).lease_expires_at > utcnow().replace(tzinfo=None)  # SQLite gives naive UTC back
    assert not leases.renew_lease(db, job.id, 1, "w2:1", 30)
    assert not leases.renew_lease(db, job.id, 2, "w1:1", 30)


def test_renew_lease_fails_once_the_lease_was_taken_over(db):
    job = running(db, expires_in=-5)
    _, attempt, owner, expires = leases.expired_leases(db)[0]
    assert leases.take_over_lease(db, job.id, attempt, owner, expires, "w2:1", "w2", 30)
    assert not leases.renew_lease(db, job.id, 1, "w1:1", 30)
    assert leases.renew_lease(db, job.id, 1, "w2:1", 30)


def test_take_over_lease_is_won_by_exactly_one_caller(db):
    job = running(db, expires_in=-5)
    (_, attempt, owner, expires), = leases.expired_leases(db)
    assert leases.take_over_lease(db, job.id, attempt, owner, expires, "w2:1", "w2", 30)
    assert not leases.take_over_lease(db, job.id, attempt, owner, expires, "w3:1", "w3", 30)
    job = fresh(db, job)
    assert (job.lease_owner, job.worker, job.attempt, job.state) == ("w2:1", "w2", 1, RUNNING)
    assert leases.expired_leases(db) == []


def test_a_live_lease_is_not_taken_over(db):
    job = running(db, expires_in=60)
    fresh_job = fresh(db, job)
    assert not leases.take_over_lease(db, job.id, 1, "w1:1", fresh_job.lease_expires_at, "w2:1", "w2", 30)
    assert leases.expired_leases(db) == []
    assert leases.expired_leases(db, now=utcnow() + timedelta(seconds=120)) == [(job.id, 1, "w1:1", fresh_job.lease_expires_at)]


def test_fence_holds_the_row_for_writes_under_the_lease(db):
    job = running(db)
    assert leases.fence(db, job.id, 1, "w1:1")
    db.execute(update(Job).where(Job.id == job.id).values(progress={"epoch": 1}))
    db.commit()
    assert fresh(db, job).progress == {"epoch": 1}
    assert not leases.fence(db, job.id, 1, "w2:1")
    db.rollback()
    assert lifecycle.finish(db, job.id, SUCCEEDED, lease=(1, "w1:1"))
    assert not leases.fence(db, job.id, 1, "w1:1")  # ended: the lease went with it


def test_record_launch_under_the_lease_or_lease_lost(db):
    job = running(db)
    leases.record_launch(db, job.id, (1, "w1:1"), pid=123, launcher="slurm", launcher_job_id="77")
    job = fresh(db, job)
    assert (job.pid, job.launcher, job.launcher_job_id) == (123, "slurm", "77")
    with pytest.raises(leases.LeaseLost):
        leases.record_launch(db, job.id, (1, "w2:1"), pid=456)
    assert not hasattr(lifecycle, "LeaseLostError")  # one class: server.leases.LeaseLost


# ---------------------------------------------------------------------------------------------
# migration 0006: stop_reason for the rows that existed before it
# ---------------------------------------------------------------------------------------------
def test_migration_0006_gives_existing_rows_their_stop_reason(tmp_path):
    import sqlalchemy as sa

    from server.migrate import upgrade

    url = f"sqlite:///{tmp_path}/old.db"
    upgrade(url, "0005_scale_out")
    engine = sa.create_engine(url)
    rows = [("queued", False, None, None), ("succeeded", False, None, None), ("failed", False, None, "boom"),
            ("cancelled", False, None, "cancelled by bob"), ("pruned", False, 1, "pruned by sweep 3 at epoch 1"),
            ("running", True, 2, "pruned by sweep 3 at epoch 2"), ("running", True, None, None),
            ("exporting", True, 4, None), ("running", False, 5, None)]
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (id, name, is_admin, created_at) VALUES (1, 'alice', 0, '2026-01-01')"))
        for i, (state, asked, trial, error) in enumerate(rows, 1):
            conn.execute(sa.text("INSERT INTO jobs (id, kind, name, state, config, owner_id, attempt, cancel_requested, "
                                 "progress, metrics, error, created_at, updated_at, max_attempts, priority, trial_number) "
                                 "VALUES (:id, 'distill', 'j', :state, '{}', 1, 1, :asked, '{}', '{}', :error, "
                                 "'2026-01-01', '2026-01-01', 3, 'normal', :trial)"),
                         {"id": i, "state": state, "asked": asked, "error": error, "trial": trial})
    upgrade(url)
    with engine.connect() as conn:
        got = [r[0] for r in conn.execute(sa.text("SELECT stop_reason FROM jobs ORDER BY id"))]
    engine.dispose()
    assert got == [None, None, FAILED, CANCELLED, PRUNED, PRUNED, CANCELLED, CANCELLED, None]
