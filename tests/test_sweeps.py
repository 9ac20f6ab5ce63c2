"""Sweeps without a service: the search-space and pruner validation (field-named errors), the
trial configs, the Pareto front, and where Optuna's storage goes (apart from our Alembic table)."""
from __future__ import annotations

import pytest

from server.sweeps import SweepError, apply_params, pareto_front, validate_pruner, validate_search_space, validate_sweep
from tests.helpers import TINY_RECIPE, job_config, migrated_database
from worker.sweep import OPTUNA_SCHEMA, optuna_url, teacher_outputs_config, uses_teacher

BASE = job_config("distill", "/data/digits", {**TINY_RECIPE, "epochs": 2}, checkpoint=7)


def base() -> dict:
    from deit_core.config import parse_config

    return parse_config(BASE, check_paths=False).to_dict()


def field_of(fn, *args) -> str:
    with pytest.raises(SweepError) as e:
        fn(*args)
    return e.value.field


def test_a_search_space_is_normalized():
    space = validate_search_space({"alpha": {"low": 0.1, "high": 0.9}, "lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                   "distillation_type": ["hard", "soft"], "epochs": {"choices": [1, 2]},
                                   "student_model": ["deit_tiny_distilled_patch16_224"]}, base())
    assert space["alpha"] == {"low": 0.1, "high": 0.9, "log": False}
    assert space["lr"]["log"] is True
    assert space["distillation_type"] == {"choices": ["hard", "soft"]}
    assert space["epochs"] == {"choices": [1, 2]}


@pytest.mark.parametrize("space, field", [
    ({"alpha": {"low": 0.1, "high": 1.5}}, "search_space.alpha"),          # the engine's range: alpha <= 1
    ({"alpha": {"low": 0.5, "high": 0.5}}, "search_space.alpha.high"),     # empty range
    ({"tau": {"low": 0, "high": 2, "log": True}}, "search_space.tau.low"),
    ({"lr": {"low": 1e-4, "high": 1e-2, "step": 0.001, "log": True}}, "search_space.lr.step"),
    ({"epochs": {"low": 1.5, "high": 3}}, "search_space.epochs.low"),      # epochs are integers
    ({"distillation_type": ["hard", "fuzzy"]}, "search_space.distillation_type"),
    ({"distillation_type": {"low": 0, "high": 1}}, "search_space.distillation_type"),
    ({"student_model": ["resnet50"]}, "search_space.student_model"),
    ({"alpha": [0.5, 0.5]}, "search_space.alpha.choices"),
    ({"batch_size": [8, 16]}, "search_space.batch_size"),
    ({"alpha": {"low": 0.1, "high": 0.2, "mode": "x"}}, "search_space.alpha.mode"),
    ({}, "search_space"),
    ([], "search_space"),
])
def test_a_bad_search_space_names_its_field(space, field):
    assert field_of(validate_search_space, space, base()) == field


def test_the_servers_caps_apply_to_the_search_space():
    def cap(cfg):
        if cfg["train"]["epochs"] > 3:
            raise ValueError("must be <= 3 on this server")

    assert field_of(validate_search_space, {"epochs": [1, 4]}, base(), cap) == "search_space.epochs"


@pytest.mark.parametrize("pruner, field", [
    ({"type": "hyperband"}, "pruner.type"), ({"type": "threshold"}, "pruner.lower"),
    ({"type": "threshold", "lower": 101}, "pruner.lower"), ({"type": "median", "lower": 3}, "pruner.lower"),
    ({"type": "median", "n_warmup_steps": -1}, "pruner.n_warmup_steps"), ("median", "pruner"),
])
def test_a_bad_pruner_names_its_field(pruner, field):
    assert field_of(validate_pruner, pruner) == field


def test_sweep_settings_are_checked():
    ok = {"search_space": {"alpha": [0.3, 0.7]}}
    assert field_of(validate_sweep, {**ok, "trials": 500}, base(), 200) == "trials"
    assert field_of(validate_sweep, {**ok, "trials": 4, "parallel": 5}, base(), 200) == "parallel"
    assert field_of(validate_sweep, {**ok, "trials": True}, base(), 200) == "trials"
    no_teacher = base()
    no_teacher["teacher"]["checkpoint"] = None
    assert field_of(validate_sweep, ok, no_teacher, 200) == "config.teacher.checkpoint"
    cfg = validate_sweep({**ok, "trials": 4, "parallel": 2}, base(), 200)
    assert (cfg["trials"], cfg["parallel"], cfg["pruner"]["type"], cfg["teacher_outputs"]) == (4, 2, "median", True)
    assert cfg["study"].startswith("distillery-sweep-") and cfg["study"] != validate_sweep(ok, base(), 200)["study"]


def test_a_trial_config_is_the_base_with_its_params():
    cfg = apply_params(base(), {"alpha": 0.25, "lr": 0.003, "epochs": 3, "distillation_type": "soft"})
    assert (cfg["distillation"]["alpha"], cfg["train"]["lr"], cfg["train"]["epochs"], cfg["distillation"]["type"]) == \
        (0.25, 0.003, 3, "soft")
    assert base()["distillation"]["alpha"] == 0.5  # the base is not touched


def test_the_teacher_outputs_job_covers_every_trial():
    sweep = validate_sweep({"search_space": {"distillation_type": ["hard", "soft"], "epochs": [1, 3]}}, base(), 200)
    cfg = teacher_outputs_config(sweep)
    assert cfg["kind"] == "teacher_outputs" and "student" not in cfg
    assert cfg["distillation"]["type"] == "soft" and cfg["train"]["epochs"] == 3  # soft logits cover hard
    from deit_core.config import parse_config

    assert parse_config(cfg, check_paths=False).kind == "teacher_outputs"  # the engine takes it
    none = validate_sweep({"search_space": {"distillation_type": ["none"], "lr": [0.001, 0.002]}}, base(), 200)
    assert uses_teacher(sweep) and not uses_teacher(none)  # no teacher to cache: no teacher_outputs job


def test_pareto_front():
    pts = [{"id": 1, "acc": 90.0, "ms": 5.0}, {"id": 2, "acc": 85.0, "ms": 2.0}, {"id": 3, "acc": 84.0, "ms": 3.0},
           {"id": 4, "acc": 95.0, "ms": 9.0}, {"id": 5, "acc": 90.0, "ms": 5.0}, {"id": 6, "acc": 70.0, "ms": None},
           {"id": 7, "acc": 89.0, "ms": 6.0}]
    # 3 is beaten by 2 (cheaper and better), 5 equals 1 (first kept), 7 by 1, 6 has no latency
    assert pareto_front(pts, "acc", "ms") == [2, 1, 4]
    assert pareto_front([], "acc", "ms") == []
    assert pareto_front([{"id": 1, "acc": 50.0, "ms": 1.0}], "acc", "ms") == [1]


def test_latency_front_ignores_differences_inside_the_measured_spread():
    """1.70-1.79 ms of one architecture is noise: the most accurate of them is the front, not a staircase."""
    def pt(i, acc, p50, p10, p90):
        return {"id": i, "acc": acc, "ms": p50, "lat": {"p50": p50, "p10": p10, "p90": p90}}
    pts = [pt(1, 80.0, 1.70, 1.65, 1.80), pt(2, 81.0, 1.74, 1.68, 1.82), pt(3, 82.0, 1.79, 1.72, 1.86),
           pt(4, 90.0, 5.3, 5.0, 5.6), pt(5, 85.0, 5.1, 4.9, 5.5)]
    assert pareto_front(pts, "acc", "ms") == [1, 2, 3, 5, 4]  # by bare p50 every step of the noise is a trade-off
    assert pareto_front(pts, "acc", "ms", spread="lat") == [3, 4]  # 3 is as fast as 1 and 2, 4 as fast as 5: more accurate
    # equal accuracy at the same speed: the first is kept; a clearly faster one at equal accuracy wins
    same = [pt(7, 80.0, 1.79, 1.7, 1.9), pt(6, 80.0, 1.70, 1.6, 1.8), pt(8, 80.0, 1.0, 0.9, 1.1)]
    assert pareto_front(same[:2], "acc", "ms", spread="lat") == [6]
    assert pareto_front(same, "acc", "ms", spread="lat") == [8]
    # equal accuracy, overlapping spreads chained so that id order and spread order disagree: still one front
    chain = [pt(1, 80.0, 1.5, 1.0, 2.0), pt(2, 80.0, 1.0, 0.5, 1.5), pt(3, 80.0, 0.6, 0.4, 0.9)]
    assert pareto_front(chain, "acc", "ms", spread="lat") == [3]
    # a point without a measured spread compares by its p50 alone
    assert pareto_front([pt(1, 80.0, 1.7, 1.6, 1.8), {"id": 2, "acc": 79.0, "ms": 1.0}], "acc", "ms", spread="lat") == [2, 1]


def test_optunas_storage_is_apart_from_our_alembic_table():
    """Optuna stamps its own revision in ``alembic_version``; it must never see ours."""
    url, kw = optuna_url("postgresql+psycopg://u:p@db:5432/distillery")
    assert url == "postgresql+psycopg://u:p@db:5432/distillery"
    assert kw["connect_args"]["options"] == f"-csearch_path={OPTUNA_SCHEMA}"
    url, _ = optuna_url("sqlite:////var/lib/distillery/distillery.db")
    assert url == "sqlite:////var/lib/distillery/distillery.optuna.db"
    with pytest.raises(ValueError):
        optuna_url("sqlite://")


def test_optuna_on_sqlite_leaves_our_migrations_alone(tmp_path):
    """A real study beside a migrated SQLite database: our alembic_version keeps our revision."""
    import sqlalchemy

    from server.migrate import upgrade
    from worker.sweep import storage

    url = f"sqlite:///{tmp_path}/d.db"
    upgrade(url)
    head = sqlalchemy.create_engine(url).connect().execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
    import optuna

    st = optuna.create_study(study_name="s", storage=storage(url), direction="maximize")
    st.tell(st.ask(), 1.0)
    again = sqlalchemy.create_engine(url).connect().execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
    assert again == head and (tmp_path / "d.optuna.db").exists()


def test_first_trials_must_lie_in_the_search_space():
    space = {"search_space": {"epochs": [1, 3], "alpha": {"low": 0.1, "high": 0.9}}, "trials": 2}
    assert validate_sweep({**space, "first_trials": [{"epochs": 1, "alpha": 0.5}]}, base(), 200)["first_trials"] == \
        [{"epochs": 1, "alpha": 0.5}]
    assert field_of(validate_sweep, {**space, "first_trials": [{"epochs": 2}]}, base(), 200) == "first_trials.0.epochs"
    assert field_of(validate_sweep, {**space, "first_trials": [{}, {"alpha": 1.0}]}, base(), 200) == "first_trials.1.alpha"
    assert field_of(validate_sweep, {**space, "first_trials": [{"tau": 1.0}]}, base(), 200) == "first_trials.0.tau"
    assert field_of(validate_sweep, {**space, "first_trials": [{}, {}, {}]}, base(), 200) == "first_trials"


@pytest.fixture
def sqlite_db(tmp_path):
    """A migrated SQLite database with one user, for the driver's own rules (no worker, no broker)."""
    database = migrated_database(f"sqlite:///{tmp_path}/d.db")
    yield database
    database.dispose()


def add_job(database, **values) -> int:
    from server.models import Job

    with database.session() as s:
        job = Job(owner_id=1, name="j", progress={}, metrics={}, attempt_history=[], **values)
        s.add(job)
        s.flush()
        return job.id


def test_advance_is_taken_by_one_caller_at_a_time(sqlite_db, tmp_path):
    """A sweep another caller holds is left alone; once its hold is stale (the caller died) the
    next caller takes it: here it finds a cancel request and ends the sweep cancelled."""
    from datetime import timedelta

    from sqlalchemy import update

    from server.models import Job, utcnow
    from server.settings import Settings
    from server.vocabulary import CANCELLED, RUNNING, SWEEP
    from worker.sweep import MUTEX_S, advance

    settings = Settings(database_url=sqlite_db.url, storage=str(tmp_path / "storage"))
    sweep_id = add_job(sqlite_db, kind=SWEEP, state=RUNNING, cancel_requested=True, lease_owner="other:1:1",
                       heartbeat_at=utcnow(), config={"kind": SWEEP, "trials": 2, "parallel": 1})
    assert advance(None, settings, sqlite_db, sweep_id) is None  # held by "other"
    with sqlite_db.session() as s:
        assert s.get(Job, sweep_id).state == RUNNING
        s.execute(update(Job).where(Job.id == sweep_id).values(heartbeat_at=utcnow() - timedelta(seconds=MUTEX_S + 1)))
    assert advance(None, settings, sqlite_db, sweep_id) == CANCELLED
    with sqlite_db.session() as s:
        job = s.get(Job, sweep_id)
        assert (job.state, job.error, job.lease_owner, job.lease_expires_at) == (CANCELLED, "cancelled by user", None, None)
    assert advance(None, settings, sqlite_db, sweep_id) is None  # ended: nothing more to do


def test_prune_ends_a_trial_pruned_not_cancelled(sqlite_db):
    """Queued: pruned at once. Running: flagged like a cancel; the worker's stop then ends it
    ``pruned`` with the pruner's reason (``lifecycle.stop_outcome``), a user's cancel ``cancelled``."""
    from server import lifecycle
    from server.models import Job
    from server.vocabulary import CANCELLED, DISTILL, PRUNED, QUEUED, RUNNING

    queued = add_job(sqlite_db, kind=DISTILL, state=QUEUED, trial_number=0, config={})
    running = add_job(sqlite_db, kind=DISTILL, state=RUNNING, trial_number=1, config={})
    plain = add_job(sqlite_db, kind=DISTILL, state=RUNNING, config={})
    reason = f"{lifecycle.PRUNE_REASON} 9 (median pruner) at epoch 2: val top-1 12.00%"
    with sqlite_db.session() as s:
        assert lifecycle.prune(s, s.get(Job, queued), reason)
        assert lifecycle.prune(s, s.get(Job, running), reason)
        assert not lifecycle.prune(s, s.get(Job, plain), reason)  # not a trial: never pruned
        s.expire_all()
        assert (s.get(Job, queued).state, s.get(Job, queued).error) == (PRUNED, reason)
        job = s.get(Job, running)
        assert job.state == RUNNING and job.cancel_requested
        assert lifecycle.stop_outcome(job) == (PRUNED, reason)
        assert lifecycle.stop_outcome(s.get(Job, plain)) == (CANCELLED, "cancelled by user")


def test_why_optuna_needs_its_own_schema(tmp_path):
    """On our schema, Optuna reads our Alembic revision as its own and refuses to start: the reason
    worker.sweep.storage keeps it in a schema (PostgreSQL) or a file (SQLite) of its own."""
    import optuna

    from server.migrate import upgrade

    url = f"sqlite:///{tmp_path}/ours.db"
    upgrade(url)
    with pytest.raises(RuntimeError, match="no longer compatible with the table schema"):
        optuna.storages.RDBStorage(url)


def test_a_sweep_is_not_retried(sqlite_db, tmp_path):
    from server import lifecycle
    from server.models import Job
    from server.settings import Settings
    from server.vocabulary import FAILED, SWEEP

    sweep_id = add_job(sqlite_db, kind=SWEEP, state=FAILED, config={"kind": SWEEP})
    with sqlite_db.session() as s, pytest.raises(lifecycle.JobConflict) as e:
        lifecycle.retry(s, None, Settings(database_url=sqlite_db.url, storage=str(tmp_path)), s.get(Job, sweep_id))
    assert e.value.field == "kind"


# ----------------------------------------------------------------------------- the pruner's rules
def median_study(n_startup_trials: int = 1):
    import optuna

    from worker.sweep import pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = {"pruner": {"type": "median", "n_startup_trials": n_startup_trials, "n_warmup_steps": 0}}
    return optuna.create_study(direction="maximize", pruner=pruner(cfg))  # in memory: no service


def finished_trial(st, curve: dict[int, float], epochs: int) -> None:
    """A completed trial, reported as the driver reports one (worker.sweep.judge, no pruning)."""
    from worker.sweep import judge

    t = st.ask()
    judge(t, {}, curve, epochs, 0, prune=False)
    st.tell(t, curve[max(curve)])


def test_an_epoch_is_reported_at_its_share_of_the_trials_own_schedule():
    from worker.sweep import schedule_step

    assert [schedule_step(e, 4) for e in range(5)] == [0, 25, 50, 75, 100]
    assert [schedule_step(e, 3) for e in (1, 2, 3)] == [33, 67, 100]
    assert schedule_step(1, 400) == 1 and schedule_step(400, 400) == 100
    st = median_study()
    finished_trial(st, {1: 10.0, 2: 20.0}, epochs=2)
    values = st.trials[0].intermediate_values
    assert sorted(values) == list(range(50, 101))  # every percent from its first epoch's, so trials of any length meet
    assert values[50] == values[99] == 10.0 and values[100] == 20.0  # what it had done by that share


def test_a_long_schedule_is_compared_at_the_same_share_not_the_same_epoch():
    """A 4-epoch trial ends at 80% top-1; a 10-epoch one at its epoch 4 has run 40% of its schedule.
    By absolute epoch (the old rule) the long trial is far below at epoch 4; at the same share it is not."""
    from worker.sweep import judge

    st = median_study()
    finished_trial(st, {1: 10.0, 2: 30.0, 3: 50.0, 4: 80.0}, epochs=4)
    long = st.ask()
    assert judge(long, {}, {1: 5.0, 2: 8.0, 3: 28.0, 4: 35.0}, epochs=10, warmup_epochs=0) is None
    assert sorted(st.trials[1].intermediate_values) == list(range(10, 41))
    assert not long.should_prune()  # 35 at 40% against the short trial's 10 at 25%

    # and a long trial that is weak at its share is still pruned, at the first epoch it is behind
    long2 = st.ask()
    assert judge(long2, {}, {1: 5.0, 2: 8.0, 3: 9.0, 4: 35.0}, epochs=10, warmup_epochs=0) == (3, 9.0)  # 9 < 10 at 30%


def test_warm_up_spares_the_epochs_it_names():
    from worker.sweep import judge, may_prune

    assert [e for e in range(1, 6) if may_prune(e, 5, 2)] == [3, 4]  # 1..2 spared, 5 is the last
    assert [e for e in range(1, 6) if may_prune(e, 5, 0)] == [1, 2, 3, 4]
    st = median_study()
    finished_trial(st, {1: 50.0, 2: 60.0, 3: 70.0, 4: 80.0}, epochs=4)
    weak = st.ask()
    assert judge(weak, {}, {1: 1.0}, epochs=4, warmup_epochs=1) is None  # epoch 1 is warm-up 1's
    assert weak.should_prune()  # what Optuna alone would have done (its warm-up 1 spares only step 0)
    assert judge(weak, {25: 1.0}, {1: 1.0, 2: 2.0}, epochs=4, warmup_epochs=1) == (2, 2.0)


def test_a_trial_is_never_pruned_at_its_final_epoch():
    from worker.sweep import judge

    st = median_study()
    finished_trial(st, {1: 50.0, 2: 60.0}, epochs=2)
    weak = st.ask()
    assert judge(weak, {}, {1: 1.0}, epochs=1, warmup_epochs=0) is None  # its only epoch is its last
    assert weak.should_prune()  # what Optuna alone would have done
    weak2 = st.ask()
    assert judge(weak2, {}, {1: 1.0, 2: 2.0}, epochs=2, warmup_epochs=0) == (1, 1.0)
    assert judge(st.ask(), {}, {2: 2.0}, epochs=2, warmup_epochs=0) is None  # only the last epoch is new


def test_the_summary_front_uses_each_trials_measured_spread_and_flags_at_chance(sqlite_db, tmp_path):
    """Stored trials with export reports on disk: the two same-speed trials give one front point, the
    more accurate; a trial at the top-1 of guessing says so in its row."""
    import json

    from server.models import Artifact, Job
    from server.sweeps import summarize

    sweep_id = add_job(sqlite_db, kind="sweep", state="running", config={"trials": 3})
    rows = [(0, 20.0, 1.70, 1.62, 1.80), (1, 30.0, 1.76, 1.66, 1.84), (2, 10.5, 5.0, 4.8, 5.4)]
    ids = []
    for number, top1, p50, p10, p90 in rows:
        job_id = add_job(sqlite_db, kind="distill", state="succeeded", config={}, parent_id=sweep_id, trial_number=number)
        ids.append(job_id)
        path = tmp_path / f"report-{job_id}.json"
        path.write_text(json.dumps({"cpu": {"model": "x", "isa": ["avx2"], "threads": 1}, "variants": {"ptl": {
            "top1": top1, "size_bytes": 6_000_000 + number, "latency_ms": {"p50": p50, "p10": p10, "p90": p90, "runs": 50}}}}))
        with sqlite_db.session() as s:
            job = s.get(Job, job_id)
            job.metrics, job.progress = {"val_top1": top1}, {"num_classes": 10}
            s.add(Artifact(job_id=job_id, kind="report", format="report", path=str(path), size=1, sha256="0" * 64, meta={}))
    with sqlite_db.session() as s:
        summary = summarize(s, s.get(Job, sweep_id))
    assert summary["fronts"]["latency"] == [ids[1]]  # trial 0 is as fast (spreads overlap) and less accurate
    assert summary["fronts"]["size"] == [ids[0], ids[1]]
    by_id = {t["job_id"]: t for t in summary["trials"]}
    assert by_id[ids[0]]["latency"]["p10"] == 1.62 and by_id[ids[0]]["cpu"]["isa"] == ["avx2"]
    assert [by_id[i]["at_chance"] for i in ids] == [False, False, True]  # 10.5% of 10 classes is guessing


# ----------------------------------------------------------------------------- values the worker can run
@pytest.mark.parametrize("over, field", [
    ({"seed": 2147483647}, "seed"),                    # was accepted, then numpy refused every pass
    ({"seed": 42949, "trials": 2}, "seed"),            # 42949 * 100003 + 1 >= 2**32
    ({"seed": -1}, "seed"),
    ({"search_space": {"alpha": {"low": 0.2, "high": 0.8, "step": 1e-300}}}, "search_space.alpha.step"),
    ({"search_space": {"alpha": {"low": 0.2, "high": 0.8, "step": 5e-324}}}, "search_space.alpha.step"),
    ({"search_space": {"alpha": {"low": 0.2, "high": 0.8, "step": 1e-7}}}, "search_space.alpha.step"),
    ({"search_space": {"alpha": {"low": 0.2, "high": 0.8, "step": float("inf")}}}, "search_space.alpha.step"),
    ({"search_space": {"alpha": {"low": 0.2, "high": 0.8, "step": float("nan")}}}, "search_space.alpha.step"),
    ({"search_space": {"lr": {"low": 1e-4, "high": 1e-2, "step": -0.001}}}, "search_space.lr.step"),
    ({"search_space": {"lr": {"low": float("-inf"), "high": 1e-2}}}, "search_space.lr.low"),
])
def test_a_seed_or_step_the_sampler_cannot_take_is_refused(over, field):
    body = {"search_space": {"alpha": [0.3, 0.7]}, "trials": 8, **over}
    assert field_of(validate_sweep, body, base(), 200) == field


def test_the_largest_seed_accepted_is_one_every_trials_sampler_takes():
    """The bound comes from numpy (seeds below 2**32), checked here against Optuna itself."""
    import optuna

    from server.sweeps import max_seed, sampler_seed

    for trials in (1, 8, 200):
        cfg = validate_sweep({"search_space": {"alpha": [0.3, 0.7]}, "trials": trials, "seed": max_seed(trials)}, base(), 200)
        optuna.samplers.TPESampler(seed=sampler_seed(cfg, trials - 1))  # the last trial's sampler
        with pytest.raises(ValueError):
            optuna.samplers.TPESampler(seed=sampler_seed({**cfg, "seed": max_seed(trials) + 1}, trials - 1))
        assert field_of(validate_sweep, {"search_space": {"alpha": [0.3, 0.7]}, "trials": trials,
                                         "seed": max_seed(trials) + 1}, base(), 200) == "seed"


@pytest.mark.filterwarnings("ignore:The distribution is specified by")  # Optuna trims high to a whole step
def test_the_finest_step_accepted_is_one_optuna_samples():
    import optuna

    from server.sweeps import MAX_STEP_VALUES
    from worker.sweep import distributions

    finest = 0.6 / (MAX_STEP_VALUES - 1)
    cfg = validate_sweep({"search_space": {"alpha": {"low": 0.2, "high": 0.8, "step": finest}}, "trials": 4}, base(), 200)
    st = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=1), direction="maximize")
    for i in range(3):
        t = st.ask(distributions(cfg["search_space"]))
        assert 0.2 <= t.params["alpha"] <= 0.8
        st.tell(t, float(i))
