"""The root cause of a distributed failure: when one rank is killed, the job's reason names that
rank and its signal, not the other ranks' gloo "connection reset" errors.

Runs the worker's own pieces (``worker.launch`` to start torchrun, ``worker.tail`` for rank 0's
error event, ``worker.rank_failure`` for the reason) on a real 2-process CPU run.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from tests.helpers import torchrun_summary, wait_until
from worker import launch
from worker.rank_failure import failure_reason, parse_failures
from worker.tail import MetricsTail, RunProgress

from .conftest import job_config

pytestmark = [pytest.mark.slow]


def rank_process(torchrun: psutil.Process, rank: int) -> psutil.Process | None:
    for p in torchrun.children(recursive=True):
        try:
            if p.environ().get("RANK") == str(rank) and "deit_core.train" in " ".join(p.cmdline()):
                return p
        except psutil.Error:
            pass
    return None


def test_sigkilled_rank_is_named_as_the_root_cause(tmp_path, digits):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = job_config(digits, epochs=200)
    cfg["resources"]["processes"] = 2
    (run_dir / "job.json").write_text(json.dumps(cfg))
    cmd = launch.train_command(run_dir / "job.json", run_dir, processes=2)
    proc = launch.start(cmd, run_dir / "output.log", launch.child_env((), 2), cwd=Path.cwd())
    try:
        metrics = run_dir / "metrics.jsonl"
        wait_until(lambda: metrics.exists() and '"step"' in metrics.read_text(), 240, "both ranks to train",
                   describe=lambda: (run_dir / "output.log").read_text()[-3000:])
        victim = rank_process(psutil.Process(proc.pid), 1)
        assert victim is not None
        os.kill(victim.pid, signal.SIGKILL)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            launch.stop(proc, 5)
    assert rc != 0
    tail = RunProgress()
    tail.apply(MetricsTail(metrics).read_new())
    log = (run_dir / "output.log").read_text()
    assert any(f.rank == "1" and f.signal == "SIGKILL" for f in parse_failures(log)), log[-3000:]
    reason = failure_reason(run_dir / "output.log", tail.error)
    assert reason is not None and reason.startswith(f"rank 1 was killed by SIGKILL (exit code -9, pid {victim.pid})"), \
        (reason, tail.error)




def test_reason_precedence(tmp_path):
    """A killed rank beats rank 0's engine error even when the timestamps tie; a plain exit code
    does not (the engine's own message says more); without either, torchrun's root cause."""
    log = tmp_path / "output.log"
    log.write_text(torchrun_summary(code=-9, sig="  (SIGKILL)", tb="Signal 9 (SIGKILL) received by PID 101"))
    assert failure_reason(log, "RuntimeError: Connection reset by peer") == \
        "rank 1 was killed by SIGKILL (exit code -9, pid 101); the other rank(s) (0) stopped after it"
    log.write_text(torchrun_summary(code=1, sig="", tb="ValueError: bad shard"))
    assert failure_reason(log, "ValueError: bad shard on rank 0") == "ValueError: bad shard on rank 0"
    assert failure_reason(log, None) == "rank 1 exited with code 1, pid 101: ValueError: bad shard"
    log.write_text(torchrun_summary(code=1, sig="", tb="Traceback (most recent call last):\n    File \"x.py\", line 6\n"
                                                  "      raise ValueError(\"bad shard 7\")\n  ValueError: bad shard 7\n  "))
    assert failure_reason(log, None) == "rank 1 exited with code 1, pid 101: ValueError: bad shard 7"
    log.write_text("no summary at all\n")
    assert failure_reason(log, None) is None
