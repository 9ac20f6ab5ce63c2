"""`distillery up` under abuse: concurrent cancel/retry loops, a SIGKILLed worker, restarts.

The embedded service is one process (API) plus one supervised worker child on SQLite and the
filesystem broker. These tests check that no user action takes it down, that a dead worker is
restarted, and that nothing piles up in the broker folder across restarts.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from server.routing import queues_for_worker
from server.settings import Settings
from server.vocabulary import FINAL_STATES, QUEUED, RUNNING
from tests.helpers import wait_for_job, wait_until
from tests.service.conftest import teacher_config
from tests.service.test_embedded import embedded_service
from worker.lease import command_line

from .conftest import attempt_processes

pytestmark = [pytest.mark.slow]

LOOP_S = 30
SERVICE_ENV = {"per_class": (10, 2), "DISTILLERY_POLL_S": "0.3", "DISTILLERY_CANCEL_GRACE_S": "2",
               "DISTILLERY_MAX_RETRIES": "100000"}


def worker_children(up) -> list[psutil.Process]:
    """`up`'s live worker children (a killed one is a zombie until `up` reaps it). Celery retitles its
    worker with setproctitle (``[celeryd: ...] (worker --concurrency 1 ...)``): its words are matched."""
    found = []
    for p in psutil.Process(up.pid).children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "worker" in re.split(r"[\s()]+", command_line(p.cmdline())):
                found.append(p)
        except psutil.Error:
            pass
    return found


def up_log(tmp_path: Path) -> str:
    return (tmp_path / "up.log").read_text(errors="replace")


def long_job(url: str, h: dict, name: str) -> int:
    cfg = teacher_config("dataset:digits", epochs=500)
    cfg["resources"]["processes"] = 1
    r = requests.post(f"{url}/jobs", json={"kind": "teacher", "name": name, "config": cfg}, headers=h, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def cancel_retry_loop(url: str, h: dict, job_id: int, until: float, problems: list[str], counts: dict) -> None:
    """Cancel and retry one's own job as fast as the API answers; 409 (wrong state) is fine, 5xx is not."""
    while time.monotonic() < until:
        for action in ("cancel", "retry"):
            try:
                r = requests.post(f"{url}/jobs/{job_id}/{action}", headers=h, timeout=30)
            except requests.RequestException as e:
                problems.append(f"job {job_id} {action}: {e}")
                return
            counts[r.status_code] = counts.get(r.status_code, 0) + 1
            if r.status_code >= 500:
                problems.append(f"job {job_id} {action}: {r.status_code} {r.text[:200]}")


def test_concurrent_cancel_retry_loops_never_take_up_down(tmp_path):
    """4 threads cancel/retry their own job for LOOP_S seconds: `up` and its worker stay alive
    (the worker is never even restarted), no request fails with 5xx, and afterwards every job is
    consistent: running only with live training processes, queued only until the worker claims it."""
    with embedded_service(tmp_path, **SERVICE_ENV) as (url, h, up):
        worker_pid = worker_children(up)[0].pid
        jobs = [long_job(url, h, f"loop-{i}") for i in range(4)]
        problems: list[str] = []
        counts: dict[int, int] = {}
        until = time.monotonic() + LOOP_S
        threads = [threading.Thread(target=cancel_retry_loop, args=(url, h, j, until, problems, counts)) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not problems, problems[:5]
        assert up.poll() is None, up_log(tmp_path)[-3000:]
        assert [p.pid for p in worker_children(up)] == [worker_pid], "the worker died during the loops\n" + up_log(tmp_path)
        assert "exited with code" not in up_log(tmp_path)
        assert counts.get(202, 0) > 40, counts  # the loops really cancelled and retried

        def get(job_id: int) -> dict:
            return requests.get(f"{url}/jobs/{job_id}", headers=h, timeout=30).json()

        def run_dir(job: dict) -> Path:
            return tmp_path / "var" / "storage" / "runs" / str(job["id"]) / f"attempt-{job['attempt']}"

        # Every job ends consistent: a queued one is claimed (its message was not lost), a running
        # one has live training processes. Each job must be claimed once more: a final one is
        # retried, a running one is cancelled once its training runs (the worker takes one at a
        # time), until all four have been seen running and are final.
        claimed: set[int] = set()

        def cancel_running() -> bool:
            states = {}
            for job_id in jobs:
                job = get(job_id)
                states[job_id] = job["state"]
                if job["state"] == RUNNING and attempt_processes(run_dir(job)):
                    claimed.add(job_id)
                    requests.post(f"{url}/jobs/{job_id}/cancel", headers=h, timeout=30)
                elif job["state"] in FINAL_STATES and job_id not in claimed:
                    requests.post(f"{url}/jobs/{job_id}/retry", headers=h, timeout=30)
            return claimed == set(jobs) and all(s in FINAL_STATES for s in states.values())

        wait_until(cancel_running, 240, "every job to be claimed, run and cancelled", interval=1,
                   describe=lambda: f"{[get(j)['state'] for j in jobs]}\n{up_log(tmp_path)[-3000:]}")
        wait_until(lambda: not any(attempt_processes(run_dir(get(j))) for j in jobs), 30, "no training process left")
        assert QUEUED not in {get(j)["state"] for j in jobs}
        for job_id in jobs:  # hundreds of attempts, but only the newest DISTILLERY_KEEP_ATTEMPTS=2 run dirs
            attempts = list((tmp_path / "var" / "storage" / "runs" / str(job_id)).glob("attempt-*"))
            assert len(attempts) <= 2, sorted(p.name for p in attempts)
        assert up.poll() is None
    assert up.returncode == 0


def broker_files(tmp_path: Path) -> list[str]:
    broker = tmp_path / "var" / "broker"
    return sorted(str(p.relative_to(broker)) for p in broker.rglob("*") if p.is_file())


def test_sigkilled_worker_is_restarted_and_nothing_piles_up_across_restarts(tmp_path):
    """SIGKILL of the worker child: `up` restarts it and a job submitted afterwards succeeds.
    Cancelling queued jobs sends no revoke broadcast, so across two restarts of `up` the broker
    folder holds no control or message files."""
    with embedded_service(tmp_path, **SERVICE_ENV) as (url, h, up):
        first = worker_children(up)[0]
        os.kill(first.pid, signal.SIGKILL)
        restarted = wait_until(lambda: [p for p in worker_children(up) if p.pid != first.pid], 30,
                               "the worker to be restarted", describe=lambda: up_log(tmp_path)[-2000:])
        assert up.poll() is None and len(restarted) == 1
        assert "exited with code -9" in up_log(tmp_path)
        cfg = teacher_config("dataset:digits", epochs=1)
        cfg["resources"]["processes"] = 1
        r = requests.post(f"{url}/jobs", json={"kind": "teacher", "name": "after-kill", "config": cfg}, headers=h)
        job = wait_for_job(lambda i: requests.get(f"{url}/jobs/{i}", headers=h).json(), r.json()["id"], timeout=300,
                           describe=lambda: up_log(tmp_path)[-3000:])
        assert job["state"] == "succeeded", job["error"]
    for round_ in range(2):
        with embedded_service(tmp_path, **SERVICE_ENV) as (url, h, up):
            for _ in range(3):  # queued jobs cancelled at once: a revoke broadcast would leave files behind
                job_id = long_job(url, h, f"cancel-{round_}")
                assert requests.post(f"{url}/jobs/{job_id}/cancel", headers=h).status_code in (200, 202)
            wait_until(lambda: not [f for f in broker_files(tmp_path) if f.endswith(".msg")], 60,
                       "the worker to drain the queue", describe=lambda: str(broker_files(tmp_path)))
        # only the routing tables of the queues the worker consumes (one file per run-size queue,
        # rewritten in place; server.routing): no message, no per-worker control queue, no revoke,
        # no unfinished write
        files = broker_files(tmp_path)
        tables = {f"control/{q}.exchange" for q in queues_for_worker(Settings(queue="distillery"))}
        assert "control/distillery.exchange" in files and set(files) <= tables, files


def test_supervisor_backs_off_and_resets_after_a_healthy_minute():
    """A worker that dies at once is restarted after 1, 2, 4, ... s, capped at 30 s; one that ran
    for a minute before dying is restarted after 1 s again (real child processes, fake clock)."""
    import sys

    from worker.supervisor import WorkerSupervisor

    now = [0.0]
    reports: list[str] = []
    sup = WorkerSupervisor([sys.executable, "-c", "raise SystemExit(3)"], clock=lambda: now[0], report=reports.append)
    sup.start()
    delays = []
    for _ in range(7):
        sup.proc.wait(timeout=30)
        sup.check()  # notices the exit, schedules the restart
        delays.append(sup.restart_at - now[0])
        now[0] = sup.restart_at
        sup.check()  # starts it again
    assert delays == [1, 2, 4, 8, 16, 30, 30], delays
    assert sup.restarts == 7 and "exited with code 3" in reports[0]
    sup.proc.wait(timeout=30)
    now[0] += 61  # as if it had been healthy for a minute before this exit
    sup.check()
    assert sup.restart_at - now[0] == 1


HALF_OPEN = 300
HTTP_TIMEOUT_S = 3


def test_half_open_and_partial_body_clients_cannot_stall_up(tmp_path):
    """Issue 19, item 5: HALF_OPEN connections that send nothing or half a header, and one that sends
    half of its body. A normal client still gets its answer promptly, `up` holds no more threads than
    before (werkzeug's server started one per connection), and the partial-body connection is closed
    once it has been idle for DISTILLERY_HTTP_TIMEOUT_S (werkzeug's waited forever)."""
    with embedded_service(tmp_path, DISTILLERY_HTTP_TIMEOUT_S=str(HTTP_TIMEOUT_S)) as (url, h, up):
        port = int(url.split(":")[2].split("/")[0])
        proc = psutil.Process(up.pid)
        threads_before = proc.num_threads()
        idle = []
        for i in range(HALF_OPEN):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i % 2:
                s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")  # no end of headers
            idle.append(s)
        partial = socket.create_connection(("127.0.0.1", port), timeout=10)
        partial.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 1000\r\n\r\n{\"kind\": ")
        sent_at = time.monotonic()
        try:
            t0 = time.monotonic()
            r = requests.get(f"{url}/jobs", headers=h, timeout=10)
            answered_s = time.monotonic() - t0
            assert r.status_code == 200 and answered_s < 2, (r.status_code, answered_s)
            assert proc.num_threads() <= threads_before, (proc.num_threads(), threads_before)
            partial.settimeout(HTTP_TIMEOUT_S * 3)
            assert partial.recv(100) == b"", "the partial-body connection got an answer instead of being closed"
            closed_s = time.monotonic() - sent_at
            assert HTTP_TIMEOUT_S - 0.5 <= closed_s <= HTTP_TIMEOUT_S * 2, closed_s
            assert all(s.recv(10) == b"" for s in idle)  # the half-open ones are gone too
            assert requests.get(f"{url}/jobs", headers=h, timeout=10).status_code == 200
            assert proc.num_threads() <= threads_before
        finally:
            for s in (*idle, partial):
                s.close()
        assert up.poll() is None
    assert up.returncode == 0
