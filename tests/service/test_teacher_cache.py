"""One teacher, many students on the live service: teacher -> teacher_outputs -> two students through
the REST API (real PostgreSQL, Redis, worker and torchrun); both students read the cache the
teacher_outputs job wrote, which is a listed, downloadable artifact of that job."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from .conftest import distill_config, teacher_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def one_process(cfg: dict) -> dict:
    return {**cfg, "resources": {"processes": 1}}


def cache_events(service, job: dict) -> list[dict]:
    """The run's teacher_cache events, read from its metrics.jsonl in storage (what the engine logged)."""
    run = Path(service.env["DISTILLERY_STORAGE"]) / "runs" / str(job["id"]) / f"attempt-{job['attempt']}"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == "teacher_cache"]


def test_pipeline_teacher_outputs_feeds_two_students(service):
    data = str(service.data)
    hard = one_process(distill_config(data, epochs=1))
    soft = one_process(distill_config(data, epochs=1))
    soft["distillation"] = {"type": "soft"}
    body = {"kind": "distill", "name": "tc-hard", "config": hard,
            "teacher_job": {"name": "tc-teacher", "config": one_process(teacher_config(data, epochs=1))},
            "teacher_outputs": {"name": "tc-outputs"}, "students": [{"name": "tc-soft", "config": soft}]}
    r = service.api("POST", "/jobs", json=body)
    assert r.status_code == 201, r.text
    teacher_id, outputs_id, soft_id, hard_id = r.json()["pipeline"]
    assert r.json()["id"] == hard_id and r.json()["parent_id"] == outputs_id

    jobs = {i: service.wait(i, ("succeeded",)) for i in (teacher_id, outputs_id, soft_id, hard_id)}
    outputs = jobs[outputs_id]
    assert outputs["kind"] == "teacher_outputs" and outputs["parent_id"] == teacher_id
    ckpt = next(a for a in jobs[teacher_id]["artifacts"] if a["format"] == "checkpoint")
    assert outputs["config"]["teacher"]["checkpoint"] == ckpt["id"]
    assert outputs["config"]["distillation"]["type"] == "soft"  # one student is soft: logits are stored
    [cache] = outputs["artifacts"]  # no export: the cache is its one artifact
    assert cache["format"] == "teacher_outputs" and cache["kind"] == "cache" and cache["metadata"]["store"] == "fp16"
    assert cache["size"] > 0 and cache["name"] == cache_events(service, outputs)[-1]["name"]
    manifest = service.api("GET", f"/artifacts/{cache['id']}/download")
    assert manifest.status_code == 200 and hashlib.sha256(manifest.content).hexdigest() == cache["sha256"]
    assert manifest.json()["bytes"] == cache["size"] and manifest.json()["name"] == cache["name"]
    listed = service.api("GET", "/artifacts", params={"format": "teacher_outputs", "job_id": outputs_id}).json()
    assert [a["id"] for a in listed["artifacts"]] == [cache["id"]]

    for student_id in (soft_id, hard_id):
        student = jobs[student_id]
        assert student["parent_id"] == outputs_id
        assert student["config"]["teacher"]["checkpoint"] == ckpt["id"]
        assert student["config"]["distillation"]["teacher_cache"] == cache["name"]
        ev = cache_events(service, student)
        assert [e["status"] for e in ev] == ["hit", "read"], ev
        assert ev[1]["live_batches"] == 0 and ev[1]["cached_batches"] == student["progress"]["steps_per_epoch"]
        assert {a["format"] for a in student["artifacts"]} >= {"checkpoint", "ptl"}  # exported as usual

    # reuse by name: a name no cache artifact has is refused, naming the field
    named = one_process(distill_config(data, epochs=1, checkpoint=ckpt["id"]))
    named["distillation"] = {"type": "hard", "teacher_cache": "no-such-cache"}
    r = service.api("POST", "/jobs", json={"kind": "distill", "name": "tc-named", "config": named})
    assert r.status_code == 400 and r.json()["error"]["field"] == "config.distillation.teacher_cache", r.text


def test_students_of_one_cache_must_share_its_key(service):
    data = str(service.data)
    other_seed = one_process(distill_config(data, epochs=1, seed=7))
    body = {"kind": "distill", "name": "tc-bad", "config": one_process(distill_config(data, epochs=1)),
            "teacher_job": {"config": one_process(teacher_config(data))},
            "teacher_outputs": {}, "students": [{"name": "tc-bad-2", "config": other_seed}]}
    r = service.api("POST", "/jobs", json=body)
    assert r.status_code == 400 and r.json()["error"]["field"] == "students.0.config.train.seed", r.text

    r = service.api("POST", "/jobs", json={**body, "students": [{"config": one_process(distill_config(data, epochs=1))}],
                                            "teacher_outputs": {"name": "x", "epochs": 3}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "teacher_outputs.epochs", r.text
