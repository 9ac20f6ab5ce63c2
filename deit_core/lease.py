"""The run's lease file: how a training run knows its supervisor still wants it.

The service's worker holds a lease on each attempt it runs and mirrors it into
``<run dir>/lease.json`` (``{"owner", "expires_at"}``, seconds since the epoch), rewritten atomically
at every heartbeat. The training loop calls :func:`check_lease` once per log step: when the file
says the lease has run out (its worker was killed, or lost the job to a new attempt), the run
stops at once, so two attempts of one job never train side by side. A run placed by Slurm outlives
its worker on purpose (the next worker re-attaches to it), so for those the worker writes an expiry
well past its database lease (the service's ``worker.slurm.lease_file_grace_s``): the run keeps
training through a worker restart and stops only if no worker comes back. A run started by hand has no
lease file and is never stopped by this. The engine reads the file only; it knows nothing about
the service.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from .files import write_json_atomic
from .layout import EXIT_LEASE_EXPIRED, LEASE_FILE  # noqa: F401  (importers take them from here too)

log = logging.getLogger(__name__)


def write_lease_file(run_dir: Path, owner: str, expires_at: float) -> None:
    """Written by the worker's heartbeat (atomically: a reader never sees half a file)."""
    write_json_atomic(Path(run_dir) / LEASE_FILE, {"owner": owner, "expires_at": float(expires_at)})


def read_lease_file(run_dir: Path) -> dict[str, Any] | None:
    """The lease file's content, or None when there is none (a run started by hand) or it is unreadable."""
    try:
        data = json.loads((Path(run_dir) / LEASE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("expires_at"), (int, float)) else None


def lease_expired(run_dir: Path, now: float | None = None) -> bool:
    lease = read_lease_file(run_dir)
    return lease is not None and lease["expires_at"] < (time.time() if now is None else now)


def check_lease(run_dir: Path) -> None:
    """Exit this process (code 75) with a clear message if the run's lease has expired."""
    lease = read_lease_file(run_dir)
    if lease is None or lease["expires_at"] >= time.time():
        return
    message = (f"the run's lease ({lease.get('owner')}) expired at {time.ctime(lease['expires_at'])}: its worker "
               f"stopped or lost the job to a new attempt; stopping this run")
    log.error(message)
    print(f"error: {message}", file=sys.stderr, flush=True)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_LEASE_EXPIRED)  # not an exception: nothing may keep this rank training or waiting
