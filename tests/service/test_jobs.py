"""Jobs end to end on the live service: pipeline, progress, download, duplicate delivery, cancel."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psutil
import pytest
import sqlalchemy

from tests.helpers import wait_until

from .conftest import distill_config, teacher_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run_dir_of(service, job_id: int) -> str:
    with service.db().connect() as c:
        return c.execute(sqlalchemy.text("SELECT run_dir FROM jobs WHERE id = :i"), {"i": job_id}).scalar()


def processes_of(run_dir: str) -> list[psutil.Process]:
    """Every live process whose command line mentions the run directory (torchrun and its ranks)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and any(run_dir in a for a in (p.info["cmdline"] or [])):
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="module")
def pipeline(service):
    """One POST: a teacher job and a distill job that starts from the teacher's checkpoint.

    The teacher's run message is also delivered a second time on purpose (duplicate delivery).
    """
    data = str(service.data)
    body = {"kind": "distill", "name": "digits-ti", "config": distill_config(data, epochs=2),
            "teacher_job": {"name": "digits-regnety", "config": teacher_config(data, epochs=1)}}
    r = service.api("POST", "/jobs", json=body)
    assert r.status_code == 201, r.text
    teacher_id, distill_id = r.json()["pipeline"]

    from server.queue import make_celery
    from server.settings import Settings
    from server.vocabulary import RUN_TASK

    celery = make_celery(Settings.from_env(service.env))
    celery.send_task(RUN_TASK, args=[teacher_id], queue=service.env["DISTILLERY_QUEUE"])  # the duplicate

    seen_running = []
    teacher = service.wait(teacher_id)
    distill = service.wait(distill_id, on_poll=lambda j: j["state"] == "running" and j["progress"]["step"]
                           and seen_running.append(j))
    return {"first": r.json(), "teacher": teacher, "distill": distill, "running": seen_running}


def test_pipeline_creates_teacher_then_distill(pipeline):
    first, teacher, distill = pipeline["first"], pipeline["teacher"], pipeline["distill"]
    assert first["kind"] == "distill" and first["state"] == "queued" and first["parent_id"] == teacher["id"]
    assert teacher["state"] == "succeeded", teacher["error"]
    assert distill["state"] == "succeeded", distill["error"]
    ckpt = next(a for a in teacher["artifacts"] if a["format"] == "checkpoint")
    assert distill["config"]["teacher"]["checkpoint"] == ckpt["id"]
    assert {a["format"] for a in distill["artifacts"]} >= {"checkpoint", "ptl", "pt", "labels", "report"}


def test_progress_visible_while_running(pipeline, service):
    running = pipeline["running"]
    assert running, "never saw the distill job running with progress"
    p = running[0]["progress"]
    assert p["epochs"] == 2 and p["steps_per_epoch"] and 0 < p["fraction"] < 1
    assert "loss" in running[0]["metrics"]
    done = pipeline["distill"]
    assert done["progress"]["fraction"] == 1.0 and "val_top1" in done["metrics"]
    series = service.api("GET", f"/jobs/{done['id']}/metrics").json()["series"]
    assert len(series["loss"]) >= 2 and len(series["val_top1"]) == 2
    logs = service.api("GET", f"/jobs/{done['id']}/logs?tail=50").json()["lines"]
    assert logs


def test_ptl_download_loads_with_registered_sha256(pipeline, service, tmp_path):
    import torch
    from torch.jit.mobile import _load_for_lite_interpreter

    ptl = next(a for a in pipeline["distill"]["artifacts"] if a["format"] == "ptl")
    r = service.api("GET", f"/artifacts/{ptl['id']}/download")
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == ptl["size"] == len(r.content)
    assert r.headers["ETag"].strip('"') == ptl["sha256"] == hashlib.sha256(r.content).hexdigest()
    again = service.api("GET", f"/artifacts/{ptl['id']}/download", headers={"If-None-Match": f'"{ptl["sha256"]}"'})
    assert again.status_code == 304
    path = tmp_path / "model.ptl"
    path.write_bytes(r.content)
    out = _load_for_lite_interpreter(str(path))(torch.rand(1, 3, 32, 32))
    assert tuple(out.shape) == (1, 10)
    # another user cannot see or download it
    assert service.api("GET", f"/artifacts/{ptl['id']}/download", user="bob").status_code == 404


def test_duplicate_delivery_runs_once(pipeline, service):
    teacher = pipeline["teacher"]
    run_dir = Path(run_dir_of(service, teacher["id"]))
    assert [p.name for p in run_dir.parent.iterdir()] == ["attempt-1"]
    starts = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for e in starts if e["event"] == "start") == 1
    assert teacher["attempt"] == 1 and teacher["state"] == "succeeded"
    wait_until(lambda: f"[job {teacher['id']}] not queued" in service.worker_log.read_text(), 30,
               "the duplicate message to be consumed")


def test_teacher_failure_fails_the_distill_job_with_reason(service):
    empty = service.data.parent / "empty"
    (empty / "train").mkdir(parents=True, exist_ok=True)
    (empty / "val").mkdir(parents=True, exist_ok=True)
    body = {"kind": "distill", "name": "doomed", "config": distill_config(str(service.data)),
            "teacher_job": {"config": teacher_config(str(empty))}}
    r = service.api("POST", "/jobs", json=body)
    assert r.status_code == 201, r.text
    teacher_id, distill_id = r.json()["pipeline"]
    teacher = service.wait(teacher_id, timeout=240)
    assert teacher["state"] == "failed" and teacher["error"]
    distill = service.wait(distill_id, timeout=30)
    assert distill["state"] == "failed"
    assert f"teacher job {teacher_id} failed" in distill["error"]


def test_cancel_running_job_leaves_no_process(service):
    r = service.api("POST", "/jobs", json={"kind": "teacher", "name": "long",
                                           "config": teacher_config(str(service.data), epochs=200)})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    service.wait(job_id, states=("running",), timeout=240)
    wait_until(lambda: service.api("GET", f"/jobs/{job_id}").json()["progress"]["step"], 240, "the first training step")
    run_dir = run_dir_of(service, job_id)
    procs = processes_of(run_dir)
    assert len(procs) >= 3, "expected torchrun and its 2 ranks"
    r = service.api("POST", f"/jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"]
    job = service.wait(job_id, timeout=60)
    assert (job["state"], job["stop_reason"]) == ("cancelled", "cancelled")
    gone, alive = psutil.wait_procs(procs, timeout=5)
    assert not alive and not processes_of(run_dir)
    # cancelling again is a conflict; retry runs it again as attempt 2 (then cancel that too)
    assert service.api("POST", f"/jobs/{job_id}/cancel").status_code == 409
    assert service.api("POST", f"/jobs/{job_id}/retry", user="bob").status_code == 404


def test_cancel_queued_job(service):
    """Cancelling a just-submitted teacher (queued, or claimed a moment ago) cancels it and the
    distill job waiting on it, with the reason."""
    body = {"kind": "distill", "name": "never", "config": distill_config(str(service.data)),
            "teacher_job": {"config": teacher_config(str(service.data), epochs=200)}}
    teacher_id, distill_id = service.api("POST", "/jobs", json=body).json()["pipeline"]
    r = service.api("POST", f"/jobs/{teacher_id}/cancel")
    assert r.status_code == 202
    assert service.wait(teacher_id, timeout=120)["state"] == "cancelled"
    child = service.wait(distill_id, timeout=30)
    assert child["state"] == "cancelled" and f"teacher job {teacher_id}" in child["error"]


def test_distill_from_an_artifact_records_its_teacher_job_as_parent(pipeline, service):
    teacher = pipeline["teacher"]
    ckpt = next(a for a in teacher["artifacts"] if a["format"] == "checkpoint")
    cfg = distill_config(str(service.data), checkpoint=ckpt["id"])
    r = service.api("POST", "/jobs", json={"kind": "distill", "name": "from-artifact", "config": cfg})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["parent_id"] == teacher["id"] and job["config"]["teacher"]["checkpoint"] == ckpt["id"]
    assert service.api("POST", f"/jobs/{job['id']}/cancel").status_code == 202
    assert service.wait(job["id"], timeout=120)["state"] == "cancelled"
