"""Warm start (``worker.warm_start`` + ``deit_core.local_ranks``): runs forked from one interpreter
with torch and the engine imported train exactly as torchrun's do, fail the way torchrun's do, stop
when told, and die with their worker.

The slow tests share one warm server (its imports are paid once) and train real 2-process CPU runs.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from deit_core.local_ranks import RankExit, failure_summary
from tests.conftest import PY, ROOT, teacher_config
from tests.helpers import wait_until
from worker import launch
from worker.launchers import LocalLauncher
from worker.rank_failure import failure_reason_in, parse_failures
from worker.warm_start import WarmStarter


def test_the_leaders_failure_summary_reads_like_torchruns():
    """rank 1 SIGKILLed first, rank 0 stopped by the leader: the reason names rank 1, not rank 0's gloo error."""
    text = "gloo: connection reset\n" + failure_summary([RankExit(1, 101, -9, time.time()), RankExit(0, 100, -15, time.time())])
    failures = parse_failures(text)
    assert {(f.rank, f.signal, f.root) for f in failures} == {("1", "SIGKILL", True), ("0", "SIGTERM", False)}
    assert failure_reason_in(text, "RuntimeError: gloo connection reset") == \
        "rank 1 was killed by SIGKILL (exit code -9, pid 101); the other rank(s) (0) stopped after it"
    # a rank that exited with a code (no signal): the engine's own error says more, else the summary
    text = failure_summary([RankExit(0, 100, 1, time.time())])
    assert failure_reason_in(text, "ValueError: bad shard") == "ValueError: bad shard"
    assert failure_reason_in(text, None) == "rank 0 exited with code 1, pid 100"


def test_a_server_that_cannot_start_sends_runs_to_torchrun(tmp_path):
    """``/bin/true`` exits at once: the run is started cold, with torchrun, and the log says so."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "job.json").write_text("{}")
    launcher = LocalLauncher(warm=WarmStarter(python="/bin/true", ready_timeout_s=30))
    run = launcher.start(launch.TrainSpec(1, 1, run_dir, run_dir / "job.json"), launch.log)
    try:
        assert isinstance(run.proc, subprocess.Popen)
    finally:
        run.stop(5, launch.log)
    log = (run_dir / "output.log").read_text()
    assert "(warm start)" in log and "-m torch.distributed.run" in log


# ----------------------------------------------------------------------------------------- real runs

@pytest.fixture(scope="module")
def warm():
    server = WarmStarter()
    server.start()
    yield server
    server.stop()


def _spec(tmp_path: Path, name: str, cfg: dict, processes: int) -> launch.TrainSpec:
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "job.json").write_text(json.dumps(cfg))
    return launch.TrainSpec(1, 1, run_dir, run_dir / "job.json", processes_per_node=processes)


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _stepping(run_dir: Path) -> bool:
    metrics = run_dir / "metrics.jsonl"
    return metrics.exists() and '"step"' in metrics.read_text()


def _ranks(leader_pid: int) -> list[psutil.Process]:
    """The leader's rank processes in rank order (forked in order, named by the rank)."""
    def rank(p: psutil.Process) -> int:
        m = re.search(r"\(rank (\d+) of \d+\)", " ".join(p.cmdline()))
        return int(m.group(1)) if m else -1
    return sorted(psutil.Process(leader_pid).children(), key=rank)


@pytest.mark.slow
def test_a_warm_two_process_run_trains_like_torchrun(warm, small_digits, tmp_path):
    """Same config, warm and cold: the same losses and final weights on each rank;
    the warm ranks never import torch (their launch event shows the leader's fork, not a new Python)."""
    cfg = teacher_config(small_digits, epochs=1)
    spec = _spec(tmp_path, "warm", cfg, 2)
    env = launch.child_env((), 2)
    run = LocalLauncher(warm=warm).start(spec, launch.log)
    assert run.proc.__class__.__name__ == "WarmProcess"
    assert run.proc.wait(timeout=300) == 0, (spec.run_dir / "output.log").read_text()[-3000:]
    warm_ev = _events(spec.run_dir)
    start = next(e for e in warm_ev if e["event"] == "start")
    assert start["launch"]["launcher"] == "deit_core.local_ranks" and start["processes"] == 2

    cold = tmp_path / "cold"
    r = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "deit_core.train",
                        "--config", str(spec.config_path), "--output", str(cold)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # bit for bit the same training (a teacher's BatchNorm statistics differ between ranks under both)
    assert warm_ev[-1]["rank_weight_checksums"] == _events(cold)[-1]["rank_weight_checksums"]
    assert [e["loss"] for e in warm_ev if e["event"] == "step"] == [e["loss"] for e in _events(cold) if e["event"] == "step"]
    assert next(e for e in _events(cold) if e["event"] == "start")["launch"]["launcher"] == "torchrun"


@pytest.mark.slow
def test_a_killed_warm_rank_is_the_root_cause_and_a_bad_config_is_exit_2(warm, digits, small_digits, tmp_path):
    spec = _spec(tmp_path, "killed", teacher_config(small_digits, epochs=200), 2)
    run = LocalLauncher(warm=warm).start(spec, launch.log)
    try:
        wait_until(lambda: _stepping(spec.run_dir), 240, "both ranks to train",
                   describe=lambda: (spec.run_dir / "output.log").read_text()[-3000:])
        ranks = _ranks(run.proc.pid)
        names = [" ".join(p.cmdline()).strip() for p in ranks]  # named as a torchrun rank would be, so ps tells the run
        assert all(f"-m deit_core.train --config {spec.config_path}" in n for n in names), names
        assert names[1].endswith("(rank 1 of 2)") and "deit_core.local_ranks --nproc=2" in " ".join(
            psutil.Process(run.proc.pid).cmdline())
        victim = ranks[1]
        os.kill(victim.pid, signal.SIGKILL)
        rc = run.proc.wait(timeout=120)
    finally:
        if run.poll() is None:
            run.stop(5, launch.log)
    assert rc == 1
    log = (spec.run_dir / "output.log").read_text()
    assert failure_reason_in(log, None).startswith(f"rank 1 was killed by SIGKILL (exit code -9, pid {victim.pid})")

    bad = teacher_config(small_digits)
    bad["data"]["train"] = str(tmp_path / "missing")
    spec = _spec(tmp_path, "bad", bad, 2)
    assert LocalLauncher(warm=warm).start(spec, launch.log).proc.wait(timeout=120) == 2  # no retry can fix it


@pytest.mark.slow
def test_stopping_a_warm_run_stops_every_rank(warm, small_digits, tmp_path):
    spec = _spec(tmp_path, "stopped", teacher_config(small_digits, epochs=200), 2)
    run = LocalLauncher(warm=warm).start(spec, launch.log)
    wait_until(lambda: _stepping(spec.run_dir), 240, "both ranks to train")
    tree = [psutil.Process(run.proc.pid), *psutil.Process(run.proc.pid).children()]
    assert os.getpgid(run.proc.pid) == run.proc.pid  # its own process group, as a cold run's
    run.stop(10, launch.log)
    assert run.poll() is not None
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


WORKER = """
import json, sys, time
from pathlib import Path
from worker import launch
from worker.launchers import LocalLauncher
from worker.warm_start import WarmStarter
spec = launch.TrainSpec(1, 1, Path(sys.argv[1]), Path(sys.argv[1]) / "job.json", processes_per_node=2)
run = LocalLauncher(warm=WarmStarter()).start(spec, launch.log)
print(json.dumps({"leader": run.proc.pid}), flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_warm_runs_die_with_their_worker(small_digits, tmp_path):
    """kill -9 of the worker: its warm server exits, the leader and both ranks get SIGTERM from the kernel."""
    spec = _spec(tmp_path, "orphan", teacher_config(small_digits, epochs=200), 2)
    worker = subprocess.Popen([PY, "-c", textwrap.dedent(WORKER), str(spec.run_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        leader = json.loads(worker.stdout.readline())["leader"]
        wait_until(lambda: _stepping(spec.run_dir), 240, "both ranks to train")
        tree = [psutil.Process(leader), *psutil.Process(leader).children(), psutil.Process(leader).parent()]
        assert len(tree) == 4 and "worker.warm_start" in " ".join(tree[-1].cmdline())
        worker.kill()
        worker.wait()

        def all_gone():
            return not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        wait_until(all_gone, 60, "the server, the leader and the ranks to exit")
    finally:
        if worker.poll() is None:
            worker.kill()


def test_a_named_run_is_found_by_its_run_folder():
    """A warm-started rank's title reads as one argument padded with empty ones (setproctitle): the
    worker's finder of an attempt's processes (never two attempts at once) must still see it."""
    from worker.lease import names_path

    run = "/srv/storage/runs/7/attempt-1"
    title = [f"/venv/bin/python -m deit_core.train --config {run}/job.json --output {run} (rank 1 of 2)", "", ""]
    argv = ["/venv/bin/python", "-m", "deit_core.train", "--config", f"{run}/job.json", "--output", run]
    assert names_path(title, run) and names_path(argv, run)
    assert not names_path(title, "/srv/storage/runs/7/attempt-") and not names_path(argv, "/srv/storage/runs/70")
    assert names_path(argv, "/srv/storage/runs/7")  # a file under the folder names it too
    assert not names_path([title[0].replace("attempt-1", "attempt-10")], run)
