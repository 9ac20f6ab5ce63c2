"""A seeded, bounded chaos run on the production shape: 5 tiny jobs on gunicorn + 2 named Celery
workers + private PostgreSQL and Redis, while 7 faults (each kind once: worker SIGKILL and SIGSTOP,
rank SIGKILL and SIGSTOP, API SIGKILL, Redis and PostgreSQL restarts) hit them. Afterwards every
invariant of ``tests.faults.chaos`` must hold. ``benchmarks/chaos.py`` plays longer schedules."""
from __future__ import annotations

import json
import os

import pytest

from .chaos import (
    KINDS,
    Chaos,
    Probe,
    api_violations,
    job_violations,
    make_schedule,
    overlapping_attempts,
    table,
    violations,
)

SEED = int(os.environ.get("DISTILLERY_CHAOS_SEED", "19"))


def test_schedule_is_seeded_and_covers_every_kind():
    a, b = make_schedule(SEED, jobs=5, faults=7, duration=80), make_schedule(SEED, jobs=5, faults=7, duration=80)
    assert a == b and a != make_schedule(SEED + 1, jobs=5, faults=7, duration=80)
    assert sorted(f.kind for f in a.faults) == sorted(KINDS) and len(a.submits) == 5
    assert all(8 <= f.at <= 80 for f in a.faults) and list(a.faults) == sorted(a.faults, key=lambda f: f.at)


@pytest.mark.integration
@pytest.mark.slow
def test_chaos_leaves_every_invariant_standing(make_stack, private_pg, private_redis, digits):
    schedule = make_schedule(SEED, jobs=5, faults=7, duration=80)
    chaos = Chaos(make_stack(private_redis.url), private_pg, private_redis, digits, schedule)
    chaos.start()
    chaos.play()
    jobs = chaos.finish(timeout=900)  # generous: a 2-core machine shared with other runs is slow
    found = violations(chaos, jobs)
    report = f"{schedule.describe()}\n{table(chaos, jobs)}\n" + "\n".join(
        f"{h.fault.kind} -> {h.target}, jobs {sorted(h.jobs)}" for h in chaos.hits)
    print(report)
    if found:
        pytest.fail("\n".join(found) + "\n" + report + "\n" + chaos.stack.logs(), pytrace=False)


def _attempt(root, job: int, n: int, times: list[float]) -> None:
    d = root / str(job) / f"attempt-{n}"
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps({"event": "step", "time": t}) + "\n" for t in times))
    os.utime(d / "metrics.jsonl", (times[-1], times[-1]))


def test_overlapping_attempts_are_found_from_their_folders(tmp_path):
    """An attempt that wrote on after the next one began (a lost lease that trained on) is named."""
    _attempt(tmp_path, 1, 1, [100.0, 110.0])
    _attempt(tmp_path, 1, 2, [120.0, 130.0])
    assert overlapping_attempts(tmp_path, 1) == []
    _attempt(tmp_path, 2, 1, [100.0, 125.0])
    _attempt(tmp_path, 2, 2, [120.0, 130.0])
    assert overlapping_attempts(tmp_path, 2) == ["job 2: attempt-1 active until 125.0, after attempt-2 began at 120.0"]
    # A checkpoint written after the next attempt began is training too; the worker's lease file and a
    # superseded attempt's export scratch are not (its exporter registers nothing: artifacts are fenced).
    _attempt(tmp_path, 3, 1, [100.0, 110.0])
    _attempt(tmp_path, 3, 2, [120.0, 130.0])
    late = tmp_path / "3" / "attempt-1"
    for name in ("lease.json", ".export.tmp-x/model.ptl", "output.log"):
        (late / name).parent.mkdir(parents=True, exist_ok=True)
        (late / name).write_text("x")
        os.utime(late / name, (140.0, 140.0))
    assert overlapping_attempts(tmp_path, 3) == []
    (late / "checkpoints").mkdir()
    (late / "checkpoints" / "last.pt").write_text("x")
    os.utime(late / "checkpoints" / "last.pt", (126.0, 126.0))
    assert overlapping_attempts(tmp_path, 3) == ["job 3: attempt-1 active until 126.0, after attempt-2 began at 120.0"]


def test_job_invariants():
    ok = {"id": 1, "state": "succeeded", "metrics": {"val_top1": 50.0}, "attempt_history": [{}], "max_attempts": 4}
    assert job_violations(ok) == []
    assert job_violations({**ok, "metrics": {}}) == ["job 1 succeeded with no top1 in its metrics: {}"]
    assert job_violations({**ok, "state": "running"}) == ["job 1 is running, not final"]
    failed = {**ok, "state": "failed", "error": "broker down"}
    assert job_violations(failed) == ["job 1 failed after 1 of 4 attempts: broker down"]
    assert job_violations({**failed, "attempt_history": [{}] * 4}) == []


def test_5xx_counts_only_while_postgresql_is_down():
    down = [(100.0, 110.0)]
    assert api_violations([Probe(99.0, 101.0, 503, "GET /jobs"), Probe(105.0, 105.5, 500, "GET /jobs"),
                           Probe(111.0, 111.2, 200, "GET /jobs"), Probe(112.0, 112.1, None, "GET /jobs")], down) == []
    assert api_violations([Probe(111.0, 111.2, 500, "POST /jobs")], down) == \
        ["POST /jobs answered 500 at 111.2 with PostgreSQL up"]
