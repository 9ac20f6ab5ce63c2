"""A seeded, bounded chaos run on the production shape: 5 tiny jobs on gunicorn + 2 named Celery
workers + private PostgreSQL and Redis, while 7 faults (each kind once: worker SIGKILL and SIGSTOP,
rank SIGKILL and SIGSTOP, API SIGKILL, Redis and PostgreSQL restarts) hit them. Afterwards every
invariant of ``tests.faults.chaos`` must hold. ``benchmarks/chaos.py`` plays longer schedules."""
from __future__ import annotations

import os

import pytest

from .chaos import KINDS, Chaos, make_schedule, table, violations

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
