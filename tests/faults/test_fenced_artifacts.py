"""V2: a worker that lost its lease (stopped with SIGSTOP, its job restarted elsewhere, then woken
up) writes nothing under its attempt's artifacts folder and registers nothing; a file registered
twice (a retried commit, a re-attached worker) has one row; the files a worker killed between the
link and the commit left are swept once the attempt no longer holds the lease."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select, update

from server import lifecycle
from server.leases import LeaseLost
from server.models import Artifact, Job
from worker.artifacts import register_checkpoint, register_file, sweep_strays

from . import attempts
from .attempts import attempt_of, running_job

pg_db = attempts.pg_db  # the fixture

pytestmark = [pytest.mark.integration]

OWNER = "w1/100.1#1"


def final_dir(tmp_path: Path) -> Path:
    """What a finished run leaves in final/: the weights, their config, the val predictions."""
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    (final / "model.safetensors").write_bytes(b"weights" * 100)
    (final / "config.json").write_text(json.dumps({"architecture": "regnety_002"}))
    (final / "val_predictions.json").write_text(json.dumps({"model": "final", "top1": 50.0, "images": []}))
    return final


def restarted_elsewhere(database, job_id: int) -> None:
    """The reconciler judged the lease expired and queued attempt 2 (what a SIGSTOPped worker sleeps through)."""
    with database.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(state="queued", attempt=2, **lifecycle.FRESH_ATTEMPT))


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_an_attempt_that_lost_its_lease_before_registering_writes_no_file(pg_db, tmp_path):
    job_id = running_job(pg_db, OWNER)
    attempt = attempt_of(pg_db, job_id, OWNER, tmp_path / "run")
    final, artifacts = final_dir(tmp_path), tmp_path / "artifacts"
    attempt.confirm()  # held: the export may start
    restarted_elsewhere(pg_db, job_id)

    with pytest.raises(LeaseLost):  # what the runner asks before it starts the exporter into the run folder
        attempt.confirm()
    attempt.keeper.lost.clear()  # as if the woken worker had not noticed yet: the fence alone must stop it
    with pytest.raises(LeaseLost):
        register_checkpoint(attempt, artifacts, final)
    with pytest.raises(LeaseLost):
        register_file(attempt, artifacts, final / "config.json", "report", "report")
    assert files_under(artifacts) == []  # not a link, not a temp file: nothing under attempt-1
    assert attempt.lost
    with pg_db.session() as s:
        assert s.scalars(select(Artifact).where(Artifact.job_id == job_id)).all() == []


def test_a_checkpoint_registered_twice_has_one_row_and_its_files_once(pg_db, tmp_path):
    job_id = running_job(pg_db, OWNER)
    attempt = attempt_of(pg_db, job_id, OWNER, tmp_path / "run")
    final, artifacts = final_dir(tmp_path), tmp_path / "artifacts"
    first = register_checkpoint(attempt, artifacts, final)
    again = register_checkpoint(attempt, artifacts, final)  # a retried commit, or a re-attached worker
    assert first == again
    with pg_db.session() as s:
        rows = s.scalars(select(Artifact).where(Artifact.job_id == job_id, Artifact.format == "checkpoint")).all()
        assert len(rows) == 1 and rows[0].sha256 and rows[0].meta["files"] == ["model.safetensors", "config.json"]
    assert files_under(artifacts / str(job_id)) == ["attempt-1/checkpoint/config.json",
                                                     "attempt-1/checkpoint/model.safetensors",
                                                     "attempt-1/val_predictions.json"]


def test_stray_files_of_an_attempt_that_lost_its_lease_are_swept_and_registered_ones_kept(pg_db, tmp_path):
    job_id = running_job(pg_db, OWNER)
    attempt = attempt_of(pg_db, job_id, OWNER, tmp_path / "run")
    final, artifacts = final_dir(tmp_path), tmp_path / "artifacts"
    register_checkpoint(attempt, artifacts, final)
    stray = artifacts / str(job_id) / "attempt-1" / "model.ptl"  # linked, then the worker was killed before its row
    stray.write_bytes(b"ptl")
    (stray.parent / ".model.pte.tmp").write_bytes(b"half")
    with pg_db.session() as s:  # attempt 1 still holds the lease: its files are not judged
        assert sweep_strays(s, artifacts, job_id) == []
    restarted_elsewhere(pg_db, job_id)
    with pg_db.session() as s:
        removed = sweep_strays(s, artifacts, job_id)
    assert sorted(p.name for p in removed) == [".model.pte.tmp", "model.ptl"]
    assert files_under(artifacts / str(job_id)) == ["attempt-1/checkpoint/config.json",
                                                     "attempt-1/checkpoint/model.safetensors",
                                                     "attempt-1/val_predictions.json"]
