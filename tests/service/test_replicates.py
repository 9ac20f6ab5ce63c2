"""``baseline: true, seeds: 2`` on the live service (PostgreSQL, Redis, a real worker and torchrun): a
teacher job, two students and two baselines; the primary's job JSON carries the paired gain over
the baselines with its interval across seeds, for the checkpoints and for the exported .ptl models."""
from __future__ import annotations

import importlib.util

import pytest

from deit_core.paired_stats import across_seeds
from tests.helpers import wait_until

from .conftest import distill_config, teacher_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GAIN_KEYS = {"gain", "gain_ci95", "mcnemar_p", "n_images", "significant", "ci_over", "seeds", "verdict", "per_seed"}
# The ship card (issue 18, the ``card`` branch: server/ship_card.py) is checked as soon as it is merged.
RUNS_TIMEOUT_S = 1500  # about 1.5 min a run here, more on a busy machine
SHIP_CARD_MERGED = importlib.util.find_spec("server.ship_card") is not None


def one_process(cfg: dict) -> dict:
    return {**cfg, "resources": {"processes": 1}}


def check_ship_card(job: dict, teacher_id: int, baseline_id: int) -> None:
    """The contract's ``ship_card`` of a distill job with a baseline (built by the card helper)."""
    card = job["ship_card"]
    rows = {r["role"]: r for r in card["rows"]}
    assert set(rows) == {"teacher", "student", "baseline"}
    assert (rows["teacher"]["job_id"], rows["student"]["job_id"], rows["baseline"]["job_id"]) == \
        (teacher_id, job["id"], baseline_id)
    for row in rows.values():
        assert len(row["top1_ci95"]) == 2 and row["top1_ci95"][0] <= row["top1"] <= row["top1_ci95"][1]
    assert isinstance(card["sentence"], str) and card["sentence"]


def test_two_seeds_pipeline_reports_the_gain_with_an_interval_over_seeds(service):
    data = str(service.data)
    body = {"kind": "distill", "name": "rep", "config": one_process(distill_config(data, epochs=1)),
            "teacher_job": {"name": "rep-teacher", "config": one_process(teacher_config(data, epochs=1))},
            "baseline": True, "seeds": 2}
    r = service.api("POST", "/jobs", json=body)
    assert r.status_code == 201, r.text
    first = r.json()
    teacher_id, primary_id = first["pipeline"]
    [replicate_id] = first["replicates"]
    assert first["id"] == primary_id and first["seeds"] == 2 and first["replicate_of"] is None
    assert first["baseline"]["gain"] is None and first["baseline"]["pending"] == "waiting for 4 of 4 runs"

    # five runs one after another on the one worker slot: the teacher, both baselines, then both students
    primary = service.wait(primary_id, ("succeeded",), timeout=RUNS_TIMEOUT_S)
    replicate = service.wait(replicate_id, ("succeeded",), timeout=RUNS_TIMEOUT_S)
    baselines = [service.wait(j["baseline"]["job_id"], ("succeeded",), timeout=RUNS_TIMEOUT_S) for j in (primary, replicate)]
    assert replicate["replicate_of"] == primary_id and replicate["parent_id"] == teacher_id == primary["parent_id"]
    assert replicate["config"]["train"]["seed"] == primary["config"]["train"]["seed"] + 1
    assert [b["baseline_of"] for b in baselines] == [primary_id, replicate_id]
    assert [b["config"]["train"]["seed"] for b in baselines] == [primary["config"]["train"]["seed"],
                                                                 replicate["config"]["train"]["seed"]]
    for student in (primary, replicate):
        assert 0 <= student["metrics"]["teacher_train_top1"] <= 100  # the teacher's fitness, measured by each student
    for job in (primary, replicate, *baselines):
        names = {a["name"] for a in job["artifacts"] if a["format"] == "predictions"}
        assert {"val", "ptl"} <= names, job["artifacts"]

    def compared() -> dict | None:
        job = service.api("GET", f"/jobs/{primary_id}").json()
        return job if job["baseline"]["pending"] is None and job["baseline"]["gain"] is not None else None

    job = wait_until(compared, 60, "the primary's comparison")
    block = job["baseline"]
    assert GAIN_KEYS <= set(block) and block["job_id"] == baselines[0]["id"]
    assert (block["seeds"], block["ci_over"], block["mcnemar_p"]) == (2, "seeds", None)
    assert block["n_images"] == 100  # the digits val subset: 10 classes x 10 images
    per_seed = block["per_seed"]
    assert [(p["student_job"], p["baseline_job"]) for p in per_seed] == [(primary_id, baselines[0]["id"]),
                                                                         (replicate_id, baselines[1]["id"])]
    summary = across_seeds([p["gain"] for p in per_seed])
    assert block["gain"] == summary.mean and block["gain_ci95"] == list(summary.ci95)
    assert block["gain_ci95"][0] <= block["gain"] <= block["gain_ci95"][1]
    assert block["significant"] is summary.significant
    assert block["verdict"].startswith("significant" if summary.significant else "no measurable difference over 2 seeds")
    for p, student, baseline in zip(per_seed, (primary, replicate), baselines):
        assert abs(p["gain"] - (student["top1"] - baseline["top1"])) < 0.01  # the paired gain is the top-1 difference
        assert 0 <= p["mcnemar_p"] <= 1 and p["gain_ci95"][0] <= p["gain"] <= p["gain_ci95"][1]
    ptl = block["ptl"]
    assert ptl is not None and GAIN_KEYS <= set(ptl) and ptl["seeds"] == 2 and len(ptl["gain_ci95"]) == 2
    if SHIP_CARD_MERGED:
        check_ship_card(job, teacher_id, baselines[0]["id"])
