"""A sweep through the REST API on real PostgreSQL and Redis with a real worker (slow).

One teacher job trains a teacher; a sweep of two tiny trials then runs on it: a
``teacher_outputs`` child first (it fills the shared teacher-output cache), then the trials as
distill children, both allowed in flight. A threshold pruner (val top-1 below 100% from epoch 2 on)
prunes, deterministically, the trial given 3 epochs and lets the 1-epoch trial finish; the sweep
ends succeeded with its fronts, Optuna's study in its own schema agrees with the jobs, and a
trial can be promoted.
"""
from __future__ import annotations

import pytest
import sqlalchemy

from server.vocabulary import PRUNED, SUCCEEDED
from tests.helpers import job_config

from .conftest import TRAIN

pytestmark = pytest.mark.slow


def tiny(kind: str, data: str, **extra) -> dict:
    cfg = job_config(kind, data, {**TRAIN, "epochs": 1}, processes=1, **extra)
    return cfg


@pytest.fixture(scope="module")
def teacher_checkpoint(service) -> int:
    body = {"kind": "teacher", "name": "sweep-teacher", "config": tiny("teacher", str(service.data))}
    r = service.api("POST", "/jobs", json=body)
    assert r.status_code == 201, r.text
    job = service.wait(r.json()["id"], (SUCCEEDED,))
    return next(a["id"] for a in job["artifacts"] if a["format"] == "checkpoint")


def sweep_body(service, checkpoint: int, **over) -> dict:
    return {"kind": "sweep", "name": "tiny-sweep", "config": tiny("distill", str(service.data), checkpoint=checkpoint),
            "search_space": {"epochs": [1, 3], "alpha": {"low": 0.2, "high": 0.8}},
            "trials": 2, "parallel": 2, "pruner": {"type": "threshold", "lower": 100.0, "n_warmup_steps": 1},
            "first_trials": [{"epochs": 1}, {"epochs": 3}], **over}


@pytest.mark.parametrize("over, field", [
    ({"search_space": {"alpha": {"low": 0.2, "high": 2.0}}}, "search_space.alpha"),
    ({"trials": 100000}, "trials"),
    ({"pruner": {"type": "threshold"}}, "pruner.lower"),
    ({"first_trials": [{"epochs": 2}]}, "first_trials.0.epochs"),
])
def test_a_bad_sweep_is_refused_naming_the_field(service, over, field):
    r = service.api("POST", "/jobs", json=sweep_body(service, 1, **over))
    assert r.status_code == 400 and r.json()["error"]["field"] in (field, "config.teacher.checkpoint"), r.text


def test_sweep_keys_need_kind_sweep(service):
    body = {"kind": "distill", "name": "x", "config": tiny("distill", str(service.data), checkpoint="timm"), "trials": 3}
    r = service.api("POST", "/jobs", json=body)
    assert r.status_code == 400 and r.json()["error"]["field"] == "trials", r.text


def test_a_sweep_runs_prunes_and_reports_its_fronts(service, teacher_checkpoint):
    r = service.api("POST", "/jobs", json=sweep_body(service, teacher_checkpoint))
    assert r.status_code == 201, r.text
    sweep_id = r.json()["id"]
    assert r.json()["kind"] == "sweep"
    sweep = service.wait(sweep_id, (SUCCEEDED,), timeout=1200)  # minutes on a shared 2-core box

    table = service.api("GET", f"/jobs/{sweep_id}/trials").json()
    trials = {t["number"]: t for t in table["trials"]}
    assert sorted(trials) == [0, 1]
    assert [trials[n]["state"] for n in (0, 1)] == [SUCCEEDED, PRUNED], table["trials"]
    assert "pruned by sweep" in trials[1]["error"] and "epoch 2" in trials[1]["error"]
    assert service.api("GET", f"/jobs/{trials[1]['job_id']}").json()["stop_reason"] == PRUNED  # what the worker read
    prep = table["teacher_outputs_job"]
    assert prep["state"] == SUCCEEDED and prep["id"] < min(t["job_id"] for t in trials.values())  # the cache first
    done = trials[0]
    assert done["ptl_top1"] is not None and done["latency_ms"] > 0 and done["size_bytes"] > 0
    assert done["params"]["epochs"] == 1 and 0.2 <= done["params"]["alpha"] <= 0.8
    assert table["fronts"] == {"latency": [done["job_id"]], "size": [done["job_id"]]}  # a pruned trial is on no front
    assert sweep["sweep"]["best"]["job_id"] == done["job_id"]
    assert sweep["top1"] == sweep["sweep"]["best"]["top1"]
    for t in trials.values():  # one teacher forward in all: every trial read the teacher_outputs job's cache
        log = "\n".join(service.api("GET", f"/jobs/{t['job_id']}/logs?tail=400").json()["lines"])
        assert ": hit;" in log and "teacher cache: miss" not in log, log[-2000:]
    child = service.api("GET", f"/jobs/{trials[0]['job_id']}").json()
    assert child["parent_id"] == sweep_id and child["trial_number"] == 0

    # Optuna's own record, in its own schema, agrees; our Alembic table still holds our revision.
    engine = sqlalchemy.create_engine(service.database_url)
    with engine.connect() as c:
        states = c.execute(sqlalchemy.text(
            "SELECT t.number, t.state FROM distillery_optuna.trials t JOIN distillery_optuna.studies s "
            "ON s.study_id = t.study_id WHERE s.study_name = :n ORDER BY t.number"), {"n": sweep["config"]["study"]}).all()
        ours = c.execute(sqlalchemy.text("SELECT version_num FROM public.alembic_version")).scalar()
    engine.dispose()
    assert [s for _, s in states] == ["COMPLETE", "PRUNED"]
    from server.migrate import head_revision

    assert ours == head_revision()

    # promote: a succeeded trial yes (recorded and shown), a pruned one no, another sweep's job no
    r = service.api("POST", f"/jobs/{sweep_id}/promote", json={"job_id": trials[1]["job_id"]})
    assert r.status_code == 409 and r.json()["error"]["field"] == "job_id", r.text
    r = service.api("POST", f"/jobs/{sweep_id}/promote", json={"job_id": sweep_id})
    assert r.status_code == 409 and r.json()["error"]["field"] == "job_id", r.text
    r = service.api("POST", f"/jobs/{sweep_id}/promote", json={"job_id": done["job_id"]})
    assert r.status_code == 200 and r.json()["promoted"]["job_id"] == done["job_id"], r.text
    assert service.api("GET", f"/jobs/{sweep_id}/trials").json()["promoted"]["by"] == "alice"
    assert service.api("POST", f"/jobs/{sweep_id}/promote", user="bob", json={"job_id": done["job_id"]}).status_code == 404
