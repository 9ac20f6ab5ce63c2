"""The `distillery` client commands against a live service (submit, jobs, watch, cancel, diff, download)
and the failures a user meets: a wrong token, an unknown job, a server that is down."""
from __future__ import annotations

import hashlib
import re

import pytest

from distillery import api_client
from tests.browser.conftest import free_port, teacher_config

pytestmark = pytest.mark.slow


def test_submit_prints_the_job_id_alone_on_the_last_line(live, teacher_job):
    job_id, proc = teacher_job
    assert re.fullmatch(r"\d+", proc.stdout.strip().splitlines()[-1])
    job = live.job(job_id)
    assert (job["kind"], job["name"]) == ("teacher", "digits-teacher")
    assert job["config"]["teacher"]["model"] == "regnety_002"


def test_submit_rejected_config_names_the_field(live):
    body = {"kind": "teacher", "name": "bad", "config": teacher_config(live.dataset, batch_size=0)}
    proc = live.cli("submit", str(live.write_job_file("bad.json", body)))
    assert proc.returncode == api_client.EXIT_API_ERROR
    assert "train.batch_size" in proc.stderr and "Traceback" not in proc.stderr


def test_jobs_lists_a_table(live, teacher_job):
    proc = live.cli("jobs")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:4] == ["ID", "KIND", "NAME", "STATE"]
    assert any(r.split()[:3] == [str(teacher_job[0]), "teacher", "digits-teacher"] for r in rows)
    assert live.cli("jobs", "--kind", "distill").stdout.strip() == "no jobs"


def test_watch_exits_0_when_the_job_succeeds(live, teacher_job):
    proc = live.cli("watch", str(teacher_job[0]), "--interval", "0.5", timeout=480)
    assert proc.returncode == 0, proc.stdout + proc.stderr + live.log_tail()
    lines = proc.stdout.splitlines()
    assert any("running" in line and "%" in line and "ETA" in line for line in lines)
    assert lines[-1] == f"job {teacher_job[0]} succeeded"


def test_download_verifies_sha256_and_writes_atomically(live, finished_teacher, tmp_path):
    art = next(a for a in finished_teacher["artifacts"] if a["format"] == "ptl")
    proc = live.cli("download", str(finished_teacher["id"]), "--format", "ptl", "--output", f"{tmp_path}/")
    assert proc.returncode == 0, proc.stderr
    files = list(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".ptl"]  # no .part file left behind
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == art["sha256"]
    assert art["sha256"] in proc.stdout and "verified" in proc.stdout

    target = tmp_path / "report.json"
    proc = live.cli("download", str(finished_teacher["id"]), "--format", "report", "--output", str(target))
    assert proc.returncode == 0 and target.stat().st_size > 0


def test_cancel_then_watch_exits_3(live):
    body = {"kind": "teacher", "name": "to-cancel", "config": teacher_config(live.dataset, epochs=50)}
    job_id = int(live.cli("submit", str(live.write_job_file("long.json", body))).stdout.splitlines()[-1])
    proc = live.cli("cancel", str(job_id))
    assert proc.returncode == 0, proc.stderr
    proc = live.cli("watch", str(job_id), "--interval", "0.5", timeout=180)
    assert proc.returncode == api_client.EXIT_JOB_CANCELLED, proc.stdout + proc.stderr
    assert live.cli("cancel", str(job_id)).returncode == api_client.EXIT_API_ERROR  # 409: already over


def test_diff_shows_params_curves_and_the_exported_model(live, finished_teacher):
    """`distillery diff A B`: the finished teacher against a cancelled copy with another lr."""
    body = {"kind": "teacher", "name": "other-lr", "config": teacher_config(live.dataset, epochs=50, lr=2.0e-3)}
    other = int(live.cli("submit", str(live.write_job_file("other.json", body))).stdout.splitlines()[-1])
    assert live.cli("cancel", str(other)).returncode == 0
    live.wait(other, ("cancelled",))
    proc = live.cli("diff", str(finished_teacher["id"]), str(other))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    lr_row = next(line for line in out.splitlines() if line.startswith("train.lr"))
    assert "0.001" in lr_row and "0.002" in lr_row
    assert "train.epochs" in out and "teacher.model" not in out  # only what differs
    top1 = finished_teacher["metrics"]["val_top1"]
    epoch_row = next(line for line in out.splitlines() if line.split()[:1] == ["1"])
    assert f"{top1:.2f}" in epoch_row
    ptl_row = next(line for line in out.splitlines() if line.startswith("top-1 %"))
    assert ptl_row.split()[2] != "-" and ptl_row.split()[3] == "-"  # exported vs cancelled
    assert live.cli("diff", str(other)).returncode == api_client.EXIT_API_ERROR


def test_wrong_token_is_a_clear_message(live):
    proc = live.cli("jobs", token="dst_not-a-token")
    assert proc.returncode == api_client.EXIT_AUTH
    assert "401" in proc.stderr and "DISTILLERY_TOKEN" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_job_is_a_clear_message(live):
    for args in (["watch", "999999"], ["cancel", "999999"], ["download", "999999", "--format", "ptl"]):
        proc = live.cli(*args)
        assert proc.returncode == api_client.EXIT_NOT_FOUND, (args, proc.stderr)
        assert "job 999999 not found" in proc.stderr and "Traceback" not in proc.stderr


def test_server_down_is_a_clear_message(live):
    proc = live.cli("jobs", url=f"http://127.0.0.1:{free_port()}")
    assert proc.returncode == api_client.EXIT_UNREACHABLE
    assert "cannot reach" in proc.stderr and "connection refused" in proc.stderr and "Traceback" not in proc.stderr


def test_webhooks_hear_when_a_job_ends_signed_and_only_their_owners(live):
    """Issue 22: `distillery webhooks add` on the live `distillery up`; its worker's sender thread POSTs
    the cancelled job's event, signed, to a receiver on 127.0.0.1; bob's job is not sent to alice."""
    import subprocess
    import sys

    from tests.helpers import wait_until
    from tests.test_webhooks import Receiver

    receiver = Receiver("a-receivers-own-secret-32-chars!")
    try:
        added = live.cli("webhooks", "add", receiver.url, "--secret", receiver.secret)
        assert added.returncode == 0, added.stderr
        hook_id = int(re.search(r"webhook (\d+):", added.stdout).group(1))
        bob = subprocess.run([sys.executable, "-m", "distillery", "token", "create", "--user", "bob"], cwd=live.workdir,
                             env=live.env, capture_output=True, text=True, timeout=60, check=True).stdout.split()[-1]
        resp = live.api("POST", "/datasets", headers={"Authorization": f"Bearer {bob}"},
                        json={"name": "bobs-digits", "path": str(live.workdir / "var" / "digits")})
        assert resp.status_code == 201, resp.text
        ids = {}
        for who, token, data in (("alice", live.token, live.dataset), ("bob", bob, "bobs-digits")):
            body = {"kind": "teacher", "name": f"hooked-{who}", "config": teacher_config(data, epochs=50)}
            proc = live.cli("submit", str(live.write_job_file(f"hooked-{who}.json", body)), token=token)
            ids[who] = int(proc.stdout.strip().splitlines()[-1])
            assert live.cli("cancel", str(ids[who]), token=token).returncode == 0
        event = wait_until(lambda: next((r for r in receiver.received if r["body"]["job"]["id"] == ids["alice"]), None),
                           60, "the cancelled job's webhook event")
        assert event["verified"] and event["body"]["job"]["state"] == "cancelled"
        assert event["body"]["job"]["owner"] == "alice"
        bobs = lambda: live.api("GET", f"/jobs/{ids['bob']}", headers={"Authorization": f"Bearer {bob}"}).json()  # noqa: E731
        wait_until(lambda: bobs()["state"] == "cancelled" and bobs()["finished_at"], 60, "bob's job to be cancelled")
        shown = wait_until(lambda: "delivered" in (out := live.cli("webhooks", "deliveries", str(hook_id))).stdout and out,
                           30, "the delivery to be recorded")
        assert f"{ids['alice']} (cancelled)" in shown.stdout
        assert all(r["body"]["job"]["id"] != ids["bob"] for r in receiver.received)
        assert live.cli("webhooks", "remove", str(hook_id)).returncode == 0  # later tests' jobs go to no closed receiver
    finally:
        receiver.close()
