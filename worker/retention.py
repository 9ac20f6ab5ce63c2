"""Earlier attempts' run directories: carrying the newest checkpoint over to a new attempt, and
pruning old ones, so a job retried or restarted many times does not keep every attempt's
checkpoints and logs forever.

A run directory holds working files (checkpoints, logs, metrics); what a user keeps is registered
as artifacts, which are hard-linked or copied into ``storage/artifacts`` (``worker.artifacts``)
and so survive the pruning. The newest ``keep`` attempts stay: the running one and the one(s) it may
resume from (their checkpoint was already linked into the new run directory).
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from deit_core.layout import LAST_CHECKPOINT, PREV_CHECKPOINT
from server.storage import link_or_copy

from .run_contract import ATTEMPT_DIR, CHECKPOINTS, JOB_JSON, attempt_dir_name


def carry_over_checkpoint(job_runs: Path, attempt: int, run_dir: Path, config: dict[str, Any],
                          logger: logging.Logger | logging.LoggerAdapter) -> bool:
    """A later attempt (a retry, or a run requeued when its worker stopped) continues from the
    newest earlier attempt's ``last.pt`` when that attempt ran the same config (its ``job.json``),
    instead of throwing away hours of training. Returns whether the run should ``--resume``."""
    for earlier in range(attempt - 1, 0, -1):
        prev = job_runs / attempt_dir_name(earlier)
        src = prev / CHECKPOINTS
        try:
            same = json.loads((prev / JOB_JSON).read_text()) == config
        except (OSError, ValueError):
            continue
        # last.pt, the last.prev.pt it replaced, and their sha256 sidecars: the engine takes
        # the newest intact one (deit_core.checkpoint.latest_valid). Files are only ever
        # replaced by rename, never written in place, so hard links are safe and cost no space.
        files = [f for f in src.glob("last*") if f.name.split(".sha256")[0] in (LAST_CHECKPOINT, PREV_CHECKPOINT)] \
            if src.is_dir() else []
        if same and any(f.suffix == ".pt" for f in files):
            for f in files:
                link_or_copy(f, run_dir / CHECKPOINTS / f.name)
            logger.info("resuming from attempt %d's checkpoints %s", earlier, sorted(f.name for f in files))
            return True
    return False


def prune_attempts(job_runs: Path, current: int, keep: int) -> list[Path]:
    """Remove ``job_runs/attempt-N`` for every N <= ``current - keep``; return what was removed."""
    removed = []
    for d in sorted(job_runs.iterdir()) if job_runs.is_dir() else ():
        m = ATTEMPT_DIR.match(d.name)
        if m and d.is_dir() and int(m.group(1)) <= current - keep:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed
