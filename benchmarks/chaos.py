"""What survives what: the chaos harness of ``tests/faults/chaos.py`` with a longer schedule.

Starts the production shape in a temp folder (a private PostgreSQL cluster and redis-server, a
gunicorn API, two named Celery workers running real torchrun), submits ``--jobs`` tiny teacher
jobs over the first half of ``--duration`` seconds and injects ``--faults`` faults drawn from
``--seed`` (worker SIGKILL/SIGSTOP, rank SIGKILL/SIGSTOP, API SIGKILL, Redis and PostgreSQL
restarts). When every job has ended it checks the same invariants as the CI test and prints a
Markdown table: per fault kind, how often, the jobs it hit (a live attempt at that moment) and
what became of them; then the violations, if any (exit code 1). Run from the repository root:

    .venv/bin/python -m benchmarks.chaos --seed 7 --jobs 12 --faults 24 --duration 600
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from tests.faults.chaos import Chaos, make_schedule, table, violations
from tests.faults.conftest import PrivatePostgres, PrivateRedis, new_stack, pg_bin
from tests.service.conftest import write_digits


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--jobs", type=int, default=12, help="tiny teacher jobs (2 epochs, 32 px digits)")
    p.add_argument("--faults", type=int, default=24, help="faults injected, one at a time")
    p.add_argument("--duration", type=float, default=600, help="seconds the faults are spread over")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (logs, runs) at the end")
    args = p.parse_args()
    if pg_bin() is None:
        raise SystemExit("initdb/pg_ctl not found (apt-get install postgresql)")

    root = Path(tempfile.mkdtemp(prefix="distillery-chaos-", dir="/tmp"))
    root.chmod(0o755)  # the cluster runs as the postgres user when we are root
    pg, redis = PrivatePostgres(pg_bin(), root / "pg"), PrivateRedis(root / "redis")
    (root / "pg").mkdir()
    (root / "redis").mkdir()
    (root / "stack").mkdir()
    pg.init()
    redis.start()
    stack = None
    try:
        data = write_digits(root / "data" / "digits", per_class_train=20, per_class_val=5)
        stack = new_stack(pg, redis.url, root / "stack")
        schedule = make_schedule(args.seed, args.jobs, args.faults, args.duration)
        print(schedule.describe(), flush=True)
        chaos = Chaos(stack, pg, redis, data, schedule)
        began = time.time()
        chaos.start()
        chaos.play()
        jobs = chaos.finish(timeout=args.duration + 900)
        found = violations(chaos, jobs)
        print(f"\n{len(jobs)} jobs, {len(chaos.hits)} faults, {time.time() - began:.0f} s (seed {args.seed})\n")
        print(table(chaos, jobs))
        for hit in chaos.hits:
            print(f"  {hit.fault.at:6.1f}s {hit.fault.kind:<20} {hit.target:<16} jobs {sorted(hit.jobs)}")
        print("\nviolations:\n" + "\n".join(found) if found else "\nevery invariant held")
        return 1 if found else 0
    finally:
        if stack:
            stack.close()
        redis.stop()
        pg.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
