"""Pruning old attempts' run directories, so a job retried or restarted many times does not keep
every attempt's checkpoints and logs forever.

A run directory holds working files (checkpoints, logs, metrics); what a user keeps is registered
as artifacts, which are hard-linked or copied into ``storage/artifacts`` (``worker.runner._register``)
and so survive the pruning. The newest ``keep`` attempts stay: the running one and the one(s) it may
resume from (their checkpoint was already linked into the new run directory).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

ATTEMPT_DIR = re.compile(r"^attempt-(\d+)$")


def prune_attempts(job_runs: Path, current: int, keep: int) -> list[Path]:
    """Remove ``job_runs/attempt-N`` for every N <= ``current - keep``; return what was removed."""
    removed = []
    for d in sorted(job_runs.iterdir()) if job_runs.is_dir() else ():
        m = ATTEMPT_DIR.match(d.name)
        if m and d.is_dir() and int(m.group(1)) <= current - keep:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed
