"""The paired gain of a baseline group, without a broker or a database server: ``seeds: N`` specs
(``server.submissions``), the group and what it waits for (``server.replicates``), the comparison the
worker stores (``worker.comparison``) from real predictions files registered as artifacts in a
migrated SQLite file, the job JSON's ``baseline`` block reading it (``server.serializers``), the
worker registering the engine's predictions files (``worker.artifacts``), and migration 0007."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from deit_core.paired_stats import across_seeds, compare
from deit_core.predictions import VAL_PREDICTIONS, export_predictions_name, predictions_document, write_predictions
from server import lifecycle, replicates
from server.db import Database
from server.job_spec import JobSpec, ParentRef
from server.models import Artifact, Job, User, utcnow
from server.serializers import baseline_info, serialize_job
from server.submissions import SubmissionError, check_seeds, replicate_specs
from server.vocabulary import DISTILL, FAILED, MAX_SEEDS, PREDICTIONS, RUNNING, SUCCEEDED, TEACHER
from worker import comparison
from worker.artifacts import register_checkpoint, register_export

CLASSES = ["cat", "dog"]
IMAGES = [f"{CLASSES[i % 2]}/{i:03d}.jpg" for i in range(40)]
LABELS = [i % 2 for i in range(40)]


@pytest.fixture
def database(sqlite_db):
    return sqlite_db


def cfg(seed: int = 0, kind: str = "hard") -> dict:
    return {"teacher": {"checkpoint": 7}, "distillation": {"type": kind, "teacher_cache": "auto"},
            "train": {"seed": seed}, "resources": {"max_attempts": 3}}


def wrong_on(n_wrong: int, offset: int = 0) -> list[int]:
    """Predictions right on every image but ``n_wrong`` of them (from ``offset``)."""
    return [(y + 1) % 2 if offset <= i < offset + n_wrong else y for i, y in enumerate(LABELS)]


def add_predictions(s, tmp_path: Path, job: Job, name: str, predictions: list[int]) -> None:
    """A real predictions file on disk, registered as the job's ``predictions`` artifact ``name``."""
    path = tmp_path / f"{job.id}-{name}.json"
    write_predictions(path, predictions_document(name, IMAGES, LABELS, predictions, CLASSES))
    s.add(Artifact(job_id=job.id, kind="metadata", format=PREDICTIONS, path=str(path), size=path.stat().st_size,
                   sha256="0" * 64, meta={}, name=name))


def create_group(database: Database, seeds: int) -> list[Job]:
    """The jobs a ``baseline: true, seeds: N`` submission creates, through the real spec expansion."""
    student = JobSpec(DISTILL, "s", cfg())
    baseline = JobSpec(DISTILL, "s-baseline", cfg(kind="none"), baseline_of=0)
    with database.session() as s:
        jobs = lifecycle.create_jobs(s, s.get(User, 1), replicate_specs([student, baseline], seeds))
        return [j.id for j in jobs]


def finish(database: Database, job_ids, state: str = SUCCEEDED) -> None:
    with database.session() as s:
        for i in job_ids:
            s.get(Job, i).state = state


# ---------------------------------------------------------------------------------------------
# seeds: N in a submission
# ---------------------------------------------------------------------------------------------
def test_seeds_must_be_1_to_5_and_need_a_distill_job_with_a_baseline():
    assert check_seeds({"baseline": True}, DISTILL) == 1
    assert check_seeds({"baseline": True, "seeds": MAX_SEEDS}, DISTILL) == MAX_SEEDS
    for body, kind in (({"baseline": True, "seeds": 0}, DISTILL), ({"baseline": True, "seeds": 6}, DISTILL),
                       ({"baseline": True, "seeds": True}, DISTILL), ({"baseline": True, "seeds": "2"}, DISTILL),
                       ({"seeds": 2}, DISTILL), ({"baseline": False, "seeds": 2}, DISTILL),
                       ({"baseline": True, "seeds": 2}, TEACHER)):
        with pytest.raises(SubmissionError) as e:
            check_seeds(body, kind)
        assert e.value.field == "seeds" and e.value.status == 400


def test_replicate_specs_add_a_student_and_a_baseline_per_seed_in_a_pipeline_too():
    teacher = JobSpec(TEACHER, "t", cfg())
    student = JobSpec(DISTILL, "s", cfg(seed=10), parent=ParentRef.earlier(0))
    baseline = JobSpec(DISTILL, "s-baseline", cfg(seed=10, kind="none"), baseline_of=1)
    assert replicate_specs([teacher, student, baseline], 1) == [teacher, student, baseline]
    specs = replicate_specs([teacher, student, baseline], 3)
    assert [s.name for s in specs] == ["t", "s", "s-baseline", "s-seed1", "s-seed1-baseline", "s-seed2", "s-seed2-baseline"]
    assert [s.config["train"]["seed"] for s in specs[1:]] == [10, 10, 11, 11, 12, 12]
    assert [s.replicate_of for s in specs] == [None, None, None, 1, None, 1, None]
    assert [s.baseline_of for s in specs] == [None, None, 1, None, 3, None, 5]
    assert [s.parent for s in specs[3:]] == [ParentRef.earlier(0), None, ParentRef.earlier(0), None]  # the same teacher
    assert specs[1].seeds == 3 and specs[3].seeds == 1
    assert [s.config["distillation"]["type"] for s in specs[1:]] == ["hard", "none"] * 3
    assert student.config["train"]["seed"] == 10  # the submission's own spec is not changed


def test_create_jobs_links_replicates_to_their_primary(database):
    ids = create_group(database, 2)
    with database.session() as s:
        primary, b0, r1, b1 = (s.get(Job, i) for i in ids)
        assert (primary.seeds, primary.replicate_of, r1.replicate_of, b0.baseline_of, b1.baseline_of) == \
            (2, None, primary.id, primary.id, r1.id)
        pairs = replicates.group(s, primary)
        assert [(p.index, p.student.id, p.baseline.id, p.seed) for p in pairs] == [(0, ids[0], ids[1], 0), (1, ids[2], ids[3], 1)]
        assert all(replicates.primary_of(s, s.get(Job, i)).id == primary.id for i in ids)


# ---------------------------------------------------------------------------------------------
# the comparison the worker stores
# ---------------------------------------------------------------------------------------------
def test_two_seeds_store_the_mean_gain_with_a_t_interval_over_seeds_and_the_ptl_one(database, tmp_path):
    ids = create_group(database, 2)
    wrong = {ids[0]: 4, ids[1]: 10, ids[2]: 6, ids[3]: 9}  # gains: 6 of 40 images = 15 pt, then 3 of 40 = 7.5 pt
    with database.session() as s:
        for i, n in wrong.items():
            add_predictions(s, tmp_path, s.get(Job, i), "val", wrong_on(n))
            add_predictions(s, tmp_path, s.get(Job, i), "ptl", wrong_on(n + (1 if i == ids[0] else 0)))
    finish(database, ids[:3])
    assert comparison.update_after(database, ids[0]) is None  # the last baseline still runs: nothing stored
    with database.session() as s:
        primary = s.get(Job, ids[0])
        assert primary.comparison is None
        assert baseline_info(primary)["pending"] == "waiting for 1 of 4 runs" and baseline_info(primary)["gain"] is None
    finish(database, ids[3:])
    stored = comparison.update_after(database, ids[3])  # the baseline of seed 1 ended last
    expected = across_seeds([compare(wrong_on(4), wrong_on(10), LABELS).gain, compare(wrong_on(6), wrong_on(9), LABELS).gain])
    assert (stored["gain"], stored["gain_ci95"], stored["seeds"], stored["ci_over"]) == \
        (expected.mean, list(expected.ci95), 2, "seeds")
    assert stored["gain"] == 11.25 and stored["mcnemar_p"] is None and stored["n_images"] == 40
    assert stored["significant"] == expected.significant and stored["pending"] is None
    assert [(r["seed"], r["student_job"], r["baseline_job"], r["gain"], r["b"], r["c"]) for r in stored["per_seed"]] == \
        [(0, ids[0], ids[1], 15.0, 6, 0), (1, ids[2], ids[3], 7.5, 3, 0)]
    assert stored["ptl"]["per_seed"][0]["gain"] == 12.5 and stored["ptl"]["seeds"] == 2
    with database.session() as s:
        job = serialize_job(s.get(Job, ids[0]))
        assert job["seeds"] == 2 and job["replicate_of"] is None
        block = job["baseline"]
        assert block["job_id"] == ids[1] and block["gain_ci95"] == stored["gain_ci95"] and block["verdict"] == stored["verdict"]
        assert block["ptl"] == stored["ptl"] and block["pending"] is None and block["significant"] == stored["significant"]
        replicate = serialize_job(s.get(Job, ids[2]))
        assert replicate["replicate_of"] == ids[0] and replicate["baseline"]["job_id"] == ids[3]
        assert replicate["baseline"]["gain"] is None and str(ids[0]) in replicate["baseline"]["pending"]
    assert comparison.update_after(database, ids[1]) == stored  # a racing finisher computes the same thing


def test_one_seed_keeps_the_interval_over_images_and_never_says_significant(database, tmp_path):
    ids = create_group(database, 1)
    with database.session() as s:
        add_predictions(s, tmp_path, s.get(Job, ids[0]), "val", wrong_on(0))
        add_predictions(s, tmp_path, s.get(Job, ids[1]), "val", wrong_on(20))  # 20 of 40 better: a large gain
    finish(database, ids)
    stored = comparison.update_after(database, ids[1])
    one = compare(wrong_on(0), wrong_on(20), LABELS)
    assert (stored["gain"], stored["gain_ci95"], stored["mcnemar_p"]) == (50.0, list(one.ci95), one.mcnemar_p)
    assert stored["ci_over"] == "images" and stored["significant"] is False and stored["gain_ci95"][0] > 0
    assert stored["verdict"].endswith("training noise not measured: run seeds: 3")
    assert stored["ptl"] is None and "no ptl predictions" in stored["ptl_pending"]  # no export: the checkpoints still compare


def test_a_failed_run_stores_why_and_no_gain(database, tmp_path):
    ids = create_group(database, 2)
    finish(database, ids[:3])
    finish(database, ids[3:], FAILED)
    stored = comparison.update_after(database, ids[3])
    assert stored == {"pending": f"baseline seed 1 failed (job {ids[3]})"}
    with database.session() as s:
        block = baseline_info(s.get(Job, ids[0]))
        assert block["gain"] is None and block["gain_ci95"] is None and block["pending"] == stored["pending"]
        assert block["significant"] is False and block["seeds"] == 2


def test_missing_or_foreign_predictions_say_so(database, tmp_path):
    ids = create_group(database, 1)
    finish(database, ids)
    with database.session() as s:
        add_predictions(s, tmp_path, s.get(Job, ids[0]), "val", wrong_on(0))
    assert comparison.update_after(database, ids[0]) == {"pending": f"job {ids[1]} has no val predictions"}
    other = tmp_path / "other.json"  # the baseline evaluated on another val set
    write_predictions(other, predictions_document("final", [p.replace(".jpg", ".png") for p in IMAGES], LABELS, LABELS, CLASSES))
    with database.session() as s:
        s.add(Artifact(job_id=ids[1], kind="metadata", format=PREDICTIONS, path=str(other), size=1, sha256="0" * 64,
                       meta={}, name="val"))
    assert "different val images" in comparison.update_after(database, ids[0])["pending"]


def test_the_reconciler_backstop_fills_a_finished_group_once(database, tmp_path):
    ids = create_group(database, 1)
    with database.session() as s:
        for i in ids:
            add_predictions(s, tmp_path, s.get(Job, i), "val", wrong_on(2 if i == ids[0] else 3))
    finish(database, ids[:1])
    assert comparison.fill_missing(database) == []  # its baseline still runs
    finish(database, ids[1:], RUNNING)
    finish(database, ids[1:])
    assert comparison.fill_missing(database) == [ids[0]]
    assert comparison.fill_missing(database) == []  # stored: not computed again
    with database.session() as s:
        assert s.get(Job, ids[0]).comparison["gain"] == 2.5


# ---------------------------------------------------------------------------------------------
# the worker registers the engine's predictions files
# ---------------------------------------------------------------------------------------------
def test_the_final_and_exported_predictions_are_registered_by_name(database, tmp_path):
    from tests.test_runner_units import OWNER, attempt_of

    now = utcnow()
    with database.session() as s:
        job = Job(owner_id=1, name="j", kind=DISTILL, config=cfg(), state=RUNNING, attempt=1, progress={}, metrics={},
                  attempt_history=[], lease_owner=OWNER, heartbeat_at=now, lease_expires_at=now + timedelta(seconds=60))
        s.add(job)
        s.flush()
        job_id = job.id
    attempt = attempt_of(database, job_id, tmp_path)
    final, export = tmp_path / "run" / "final", tmp_path / "run" / "export"
    final.mkdir(parents=True)
    export.mkdir()
    (final / "model.safetensors").write_bytes(b"w")
    (final / "config.json").write_text("{}")
    write_predictions(final / VAL_PREDICTIONS, predictions_document("final", IMAGES, LABELS, wrong_on(4), CLASSES))
    (export / "report.json").write_text('{"gate": {"passed": true}}')
    for variant in ("fp32", "ptl"):
        document = predictions_document(variant, IMAGES, LABELS, LABELS, CLASSES)
        write_predictions(export / export_predictions_name(variant), document)
    register_checkpoint(attempt, tmp_path / "artifacts", final)
    register_export(attempt, tmp_path / "artifacts", export)
    with database.session() as s:
        rows = {a.name: a for a in s.scalars(sa.select(Artifact).where(Artifact.format == PREDICTIONS))}
        assert sorted(rows) == ["fp32", "ptl", "val"]
        assert rows["val"].meta == {"model": "final", "top1": 90.0, "n_images": 40}
        assert Path(rows["ptl"].path).name == "predictions.ptl.json" and Path(rows["ptl"].path).exists()
        assert comparison.predictions_path(s, s.get(Job, job_id), "val") == Path(rows["val"].path)


# ---------------------------------------------------------------------------------------------
# migration 0007
# ---------------------------------------------------------------------------------------------
def test_migration_0007_gives_existing_rows_one_seed_and_no_comparison(tmp_path):
    from server.migrate import upgrade

    url = f"sqlite:///{tmp_path}/old.db"
    upgrade(url, "0006_stop_reason")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (id, name, is_admin, created_at) VALUES (1, 'alice', 0, '2026-01-01')"))
        conn.execute(sa.text("INSERT INTO jobs (id, kind, name, state, config, owner_id, attempt, cancel_requested, "
                             "progress, metrics, created_at, updated_at, max_attempts, priority) VALUES (1, 'distill', 'j', "
                             "'succeeded', '{}', 1, 1, 0, '{}', '{}', '2026-01-01', '2026-01-01', 3, 'normal')"))
    upgrade(url)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT seeds, replicate_of, comparison FROM jobs WHERE id = 1")).one()
    engine.dispose()
    assert tuple(row) == (1, None, None)
