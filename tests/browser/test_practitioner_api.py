"""Issue 14 at the API, without a worker or a browser (Flask test client on a fresh SQLite database):
a checkpoint artifact must fit the job that loads it, ``baseline: true`` creates the teacher-less twin
and the payload carries the gain, a chance-level result says so, and the run's events become a phase
and a one-sentence error. The live counterparts are in test_practitioner.py."""
from __future__ import annotations

import pytest
from PIL import Image

from tests.browser.test_pages import app, token  # noqa: F401  (fixtures)

CLASSES = [str(i) for i in range(3)]


@pytest.fixture()
def setup(app, token, tmp_path):  # noqa: F811
    """A 3-class dataset 'tiny' and a finished regnety_002 teacher at 32 px with a checkpoint artifact."""
    from server.models import Artifact, Job, User

    for split in ("train", "val"):
        for c in CLASSES:
            d = tmp_path / "tiny" / split / c
            d.mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(d / "a.png")
    client = app.test_client()
    h = {"Authorization": f"Bearer {token}"}
    r = client.post("/api/v1/datasets", json={"name": "tiny", "path": str(tmp_path / "tiny")}, headers=h)
    assert r.status_code == 201, r.get_json()
    with app.extensions["distillery.db"].session() as s:
        alice = s.query(User).filter_by(name="alice").one()
        cfg = {"kind": "teacher", "data": {"train": str(tmp_path / "tiny/train"), "val": str(tmp_path / "tiny/val"),
                                           "img_size": 32}, "teacher": {"model": "regnety_002"}}
        teacher = Job(kind="teacher", name="t", state="succeeded", config=cfg, owner_id=alice.id, attempt=1,
                      progress={"num_classes": 3}, metrics={"val_top1": 90.0})
        s.add(teacher)
        s.flush()
        ckpt = tmp_path / "model.safetensors"
        ckpt.write_bytes(b"x")
        art = Artifact(job_id=teacher.id, kind="checkpoint", format="checkpoint", path=str(ckpt), size=1, sha256="0" * 64,
                       meta={"architecture": "regnety_002",
                             "config_json": {"architecture": "regnety_002", "img_size": 32, "classes": CLASSES}})
        s.add(art)
        s.commit()
        return client, h, art.id


def distill(ckpt, **parts):
    cfg = {"kind": "distill", "teacher": {"checkpoint": ckpt}, "student": {"patch_size": 8},
           "train": {"epochs": 2, "batch_size": 4, "seed": 7}}
    for k, v in parts.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


def test_a_teacher_checkpoint_fills_model_image_size_and_data(setup):
    client, h, ckpt = setup
    r = client.post("/api/v1/jobs", json={"kind": "distill", "name": "d", "config": distill(ckpt)}, headers=h)
    assert r.status_code == 201, r.get_json()
    cfg = r.get_json()["config"]
    assert cfg["teacher"]["model"] == "regnety_002" and cfg["data"]["img_size"] == 32
    assert cfg["data"]["train"].endswith("tiny/train") and cfg["teacher"]["checkpoint"] == ckpt


@pytest.mark.parametrize("part, field, words", [
    ({"teacher": {"model": "regnety_160"}}, "config.teacher.model", "is a regnety_002, not a regnety_160"),
    ({"data": {"train": "dataset:tiny/train", "val": "dataset:tiny/val", "img_size": 224}}, "config.data.img_size",
     "trained at 32 px, not 224"),
])
def test_a_conflicting_teacher_is_a_400_naming_the_field(setup, part, field, words):
    client, h, ckpt = setup
    r = client.post("/api/v1/jobs", json={"kind": "distill", "name": "d", "config": distill(ckpt, **part)}, headers=h)
    assert r.status_code == 400, r.get_json()
    err = r.get_json()["error"]
    assert err["field"] == field and words in err["message"]


def test_a_teacher_with_other_classes_is_refused(setup, tmp_path):
    client, h, ckpt = setup
    (tmp_path / "tiny/train/3").mkdir()
    (tmp_path / "tiny/val/3").mkdir()
    r = client.post("/api/v1/jobs", json={"kind": "distill", "name": "d", "config": distill(ckpt)}, headers=h)
    assert r.status_code == 400
    assert r.get_json()["error"]["field"] == "config.data.train" and "4 classes" in r.get_json()["error"]["message"]


def test_baseline_is_the_same_student_without_a_teacher_and_the_gain_is_reported(setup, app):  # noqa: F811
    from server.models import Job

    client, h, ckpt = setup
    r = client.post("/api/v1/jobs", json={"kind": "distill", "name": "d", "config": distill(ckpt), "baseline": True},
                    headers=h)
    assert r.status_code == 201, r.get_json()
    main = r.get_json()
    assert main["kind"] == "distill" and main["config"]["distillation"]["type"] == "hard" and "pipeline" not in main
    twin_id = main["baseline"]["job_id"]
    twin = client.get(f"/api/v1/jobs/{twin_id}", headers=h).get_json()
    assert twin["baseline_of"] == main["id"] and twin["name"] == "d-baseline"
    assert twin["config"]["distillation"]["type"] == "none" and twin["config"]["teacher"]["checkpoint"] is None
    for key in ("student", "train", "data"):
        assert twin["config"][key] == main["config"][key]  # same student, seed, budget and data
    assert main["baseline"]["gain"] is None
    with app.extensions["distillery.db"].session() as s:
        for job_id, top1 in ((main["id"], 81.5), (twin_id, 74.0)):
            job = s.get(Job, job_id)
            job.state, job.metrics, job.progress = "succeeded", {"val_top1": top1, "best_top1": 99.0}, {"num_classes": 3}
        s.commit()
    got = client.get(f"/api/v1/jobs/{main['id']}", headers=h).get_json()
    base = got["baseline"]  # both ended, but no predictions were stored: no gain without its paired interval
    assert (base["job_id"], base["state"], base["top1"]) == (twin_id, "succeeded", 74.0)
    assert base["gain"] is None and base["gain_ci95"] is None and base["significant"] is False and base["pending"]
    assert got["top1"] == 81.5 and got["top1_checkpoint"] == "final"  # the exported checkpoint's, not best_top1
    card = got["ship_card"]  # the teacher named by its checkpoint artifact, the twin as the baseline row; no export yet
    assert [(r["role"], r["job_id"]) for r in card["rows"]] == [("teacher", 1), ("student", main["id"]), ("baseline", twin_id)]
    assert [r["top1"] for r in card["rows"]] == [90.0, 81.5, 74.0] and card["cpu"] is None
    assert all(r["latency_ms"] is None and r["size_bytes"] is None for r in card["rows"])
    assert card["sentence"].startswith("the distilled student is 8.5 pt below its teacher, and ")
    assert "above" not in card["sentence"]  # no interval, no claim
    listed = client.get("/api/v1/jobs", headers=h).get_json()
    assert listed["jobs"] and all("ship_card" not in j for j in listed["jobs"])  # the list stays light: no report files read


def test_baseline_needs_a_distill_job_with_a_teacher(setup):
    client, h, ckpt = setup
    body = {"kind": "distill", "name": "d", "config": distill(ckpt, distillation={"type": "none"}), "baseline": True}
    r = client.post("/api/v1/jobs", json=body, headers=h)
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "baseline"
    r = client.post("/api/v1/jobs", json={**body, "config": distill(ckpt), "baseline": "yes"}, headers=h)
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "baseline"


def test_a_chance_level_result_says_so(setup, app):  # noqa: F811
    from server.models import Job

    client, h, _ = setup
    with app.extensions["distillery.db"].session() as s:
        job = s.query(Job).filter_by(name="t").one()
        job.metrics = {"val_top1": 33.3}
        s.commit()
        job_id = job.id
    got = client.get(f"/api/v1/jobs/{job_id}", headers=h).get_json()
    assert got["at_chance"] is True and round(got["chance_top1"], 1) == 33.3


def test_run_events_become_a_phase_the_teacher_top1_and_one_readable_sentence():
    from worker.tail import RunProgress

    rp = RunProgress()
    rp.apply([{"event": "phase", "phase": "loading teacher"}])
    assert rp.progress["phase"] == "loading teacher"
    rp.apply([{"event": "start", "classes": CLASSES, "epochs": 2}, {"event": "teacher", "teacher_top1": 88.0}])
    assert rp.progress["num_classes"] == 3 and rp.metrics["teacher_top1"] == 88.0
    assert rp.progress["phase"] == "teacher evaluated"
    dump = "RuntimeError: Error(s) in loading state_dict for RegNet:\n" + "\tsize mismatch for s1.b1.conv: ...\n" * 100
    rp.apply([{"event": "error", "message": dump}])
    assert len(rp.error) < 200 and "\n" not in rp.error and "log" in rp.error
