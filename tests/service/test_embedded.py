"""The embedded default: `distillery up` on SQLite + the filesystem broker, end to end; and the
refusal to start on an unmigrated database."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys

import psutil
import pytest
import requests

from tests.helpers import wait_for_job, wait_healthy, wait_until

from .conftest import EXPORT_ARGS, distillery, free_port, new_token, stop, teacher_config, write_digits

pytestmark = [pytest.mark.slow]


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    return {**env, **extra}


def test_unmigrated_database_is_refused(tmp_path):
    env = clean_env(DISTILLERY_DATABASE_URL=f"sqlite:///{tmp_path}/empty.db", DISTILLERY_SECRET_KEY=secrets.token_hex(32))
    for cmd in (["worker"], ["serve", "--port", str(free_port())], ["token", "create", "--user", "x"]):
        r = distillery(*cmd, env=env, cwd=tmp_path, check=False)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert "distillery db upgrade" in r.stderr, r.stderr
    from server.app import create_app
    from server.migrate import SchemaNotReady
    from server.settings import Settings

    with pytest.raises(SchemaNotReady, match="distillery db upgrade"):
        create_app(Settings.from_env(env))
    distillery("db", "upgrade", env=env, cwd=tmp_path)
    assert new_token("x", env, cwd=tmp_path).startswith("dst_")


@contextlib.contextmanager
def embedded_service(tmp_path, export_args: str = EXPORT_ARGS, per_class: tuple[int, int] = (20, 5), **env_extra):
    """`distillery up` with default settings (no DISTILLERY_* but the export flags and ``env_extra``)
    in ``tmp_path``, a token and the registered digits dataset; yields (api url, auth headers, `up`).
    Entered again on the same ``tmp_path``, it restarts the service on the same var/."""
    data = tmp_path / "var" / "data" / "digits"
    first = not data.exists()
    if first:
        write_digits(data, per_class_train=per_class[0], per_class_val=per_class[1])
    env = clean_env(DISTILLERY_EXPORT_ARGS=export_args, **{"DISTILLERY_POLL_S": "0.5", **env_extra})
    port = free_port()
    with open(tmp_path / "up.log", "ab") as log:
        up = subprocess.Popen([sys.executable, "-m", "distillery", "up", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api/v1"
    try:
        wait_healthy(f"{url}/health", up, describe=lambda: (tmp_path / "up.log").read_text()[-2000:])
        h = {"Authorization": f"Bearer {new_token('me', env, cwd=tmp_path)}"}
        if first:
            r = requests.post(f"{url}/datasets", json={"name": "digits", "path": "var/data/digits"}, headers=h)
            assert r.status_code == 201, r.text
        yield url, h, up
    finally:
        stop(up, timeout=30)


def run_teacher_job(url: str, h: dict, tmp_path) -> dict:
    cfg = teacher_config("dataset:digits", epochs=1)
    cfg["resources"]["processes"] = 1
    r = requests.post(f"{url}/jobs", json={"kind": "teacher", "name": "embedded", "config": cfg}, headers=h)
    assert r.status_code == 201, r.text
    return wait_for_job(lambda i: requests.get(f"{url}/jobs/{i}", headers=h).json(), r.json()["id"], timeout=360,
                        interval=1)


def test_distillery_up_end_to_end(tmp_path):
    """Default settings: ./var/distillery.db, filesystem broker."""
    with embedded_service(tmp_path) as (url, h, up):
        assert (tmp_path / "var" / "distillery.db").exists()
        job = run_teacher_job(url, h, tmp_path)
        assert job["state"] == "succeeded", (job["error"], (tmp_path / "up.log").read_text()[-3000:])
        # Stored as the server path; a non-admin reads it as the dataset reference (server/api/redaction.py).
        assert job["config"]["data"]["train"] == "dataset:digits/train"
        ptl = next(a for a in job["artifacts"] if a["format"] == "ptl")
        blob = requests.get(f"{url}/artifacts/{ptl['id']}/download", headers=h).content
        assert hashlib.sha256(blob).hexdigest() == ptl["sha256"]
        children = psutil.Process(up.pid).children(recursive=True)
    assert up.returncode == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, "distillery up left its worker behind"


def test_stopping_up_mid_run_requeues_the_job_and_the_next_start_resumes(tmp_path):
    """SIGTERM to `distillery up` while a job trains: the run is stopped (no process left) and the
    job goes back to `queued` as attempt 2, with its message in the queue; the next `up` runs
    attempt 2, which resumes from attempt 1's last checkpoint instead of starting over."""
    service_env = {"per_class": (10, 2), "DISTILLERY_POLL_S": "0.3", "DISTILLERY_CANCEL_GRACE_S": "3"}
    with embedded_service(tmp_path, **service_env) as (url, h, up):
        cfg = teacher_config("dataset:digits", epochs=500)
        cfg["resources"]["processes"] = 1
        job_id = requests.post(f"{url}/jobs", json={"kind": "teacher", "name": "long", "config": cfg}, headers=h).json()["id"]
        runs = tmp_path / "var" / "storage" / "runs" / str(job_id)
        wait_until((runs / "attempt-1" / "checkpoints" / "last.pt").exists, 240, "attempt 1's first checkpoint")
        tree = psutil.Process(up.pid).children(recursive=True)
        assert any("deit_core.train" in " ".join(p.cmdline()) for p in tree)
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    import sqlite3

    row = sqlite3.connect(tmp_path / "var" / "distillery.db").execute(
        "SELECT state, attempt FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert row == ("queued", 2), (row, (tmp_path / "up.log").read_text()[-2000:])
    assert list((tmp_path / "var" / "broker" / "queue").iterdir()), "the job's message should be back in the queue"

    with embedded_service(tmp_path, **service_env) as (url, h, up):
        metrics = runs / "attempt-2" / "metrics.jsonl"
        wait_until(lambda: metrics.exists() and '"start"' in metrics.read_text(), 240, "attempt 2 to start")
        start = next(e for e in map(json.loads, metrics.read_text().splitlines()) if e["event"] == "start")
        assert start["event"] == "start" and start["resumed"] and start["start_epoch"] >= 1, start
        assert requests.post(f"{url}/jobs/{job_id}/cancel", headers=h).status_code == 202


def test_parity_gate_failure_fails_the_job_and_keeps_checkpoint_and_report(tmp_path):
    """A worker whose policy demands int8 be a point *better* than fp32 on the bare numbers
    (--max-drop -1 --gate-alpha 1) rejects every export: the job fails with the gate's reason, and
    the fp32 checkpoint and the report of the rejected export stay registered for the user to inspect."""
    with embedded_service(tmp_path, export_args=EXPORT_ARGS + " --max-drop -1 --gate-alpha 1") as (url, h, _):
        job = run_teacher_job(url, h, tmp_path)
    assert job["state"] == "failed", job
    assert "parity gate" in job["error"] and "below fp32" in job["error"], job["error"]
    formats = {a["format"]: a for a in job["artifacts"]}
    assert {"checkpoint", "report"} <= formats.keys() and "ptl" not in formats
    assert formats["report"]["metadata"].get("rejected") is True

