"""Issue 12, item 4: many worker hosts. Two local-launcher workers with their own names and scratch
folders, on one database, broker and storage (here: two processes on one host, as two hosts
sharing a mount would run them). Two jobs submitted through the REST API run at the same time, one
on each; each run's processes get their worker's scratch as TMPDIR; each job's artifacts download
through the API with the sha256 the registry recorded."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import wait_until

from .conftest import teacher

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def tmpdir_of(pid: int | None) -> str | None:
    """TMPDIR in the environment of a live process (None once it is gone)."""
    if not pid:
        return None
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"TMPDIR=")), None)


def interval(job: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(job["started_at"]), datetime.fromisoformat(job["finished_at"])


def test_two_workers_run_two_jobs_at_once_and_both_downloads_verify(stack):
    stack.start_worker("host-a")
    stack.start_worker("host-b")
    rows = stack.live_workers()
    assert set(rows) == {"host-a", "host-b"}, rows
    assert all(r["launcher"] == "local" and r["slots"] >= 1 and stack.env["DISTILLERY_QUEUE"] in r["queues"]
               for r in rows.values()), rows

    ids = [stack.submit(f"job-{i}", teacher(stack.data)) for i in range(2)]
    tmpdirs: dict[int, set] = {i: set() for i in ids}

    def watch(job: dict) -> None:  # the run's processes (torchrun, then the exporter) and their TMPDIR
        if job["state"] in ("running", "exporting"):
            pid = stack.sql("SELECT pid FROM jobs WHERE id = :i", i=job["id"])[0]["pid"]
            if (tmp := tmpdir_of(pid)) is not None:
                tmpdirs[job["id"]].add((job["worker"], tmp))

    def both_ended():  # both jobs polled each round: they run at once
        current = [stack.job(i) for i in ids]
        for job in current:
            watch(job)
            assert job["state"] not in ("failed", "cancelled"), f"{job['error']}\n{stack.logs()}"
        return current if all(j["state"] == "succeeded" for j in current) else None

    jobs = wait_until(both_ended, 300, "both jobs to succeed", describe=stack.logs)

    workers = [j["worker"] for j in jobs]
    assert sorted(workers) == ["host-a", "host-b"], workers  # one on each, named as configured
    (a0, a1), (b0, b1) = interval(jobs[0]), interval(jobs[1])
    assert a0 < b1 and b0 < a1, f"not at the same time: {a0}..{a1} and {b0}..{b1}"
    for job in jobs:
        assert [e["worker"] for e in job["attempt_history"]] == [job["worker"]]
        seen = tmpdirs[job["id"]]
        assert seen, f"never saw job {job['id']}'s processes"
        assert seen == {(job["worker"], str(stack.scratch(job["worker"])))}, seen  # its own worker's scratch
        formats = {a["format"] for a in job["artifacts"]}
        assert {"checkpoint", "ptl", "report"} <= formats, formats
        for artifact in job["artifacts"]:
            assert stack.download_matches(artifact), artifact

    stack.stop_workers()  # a clean stop takes a worker out of the table
    assert stack.live_workers() == {}
