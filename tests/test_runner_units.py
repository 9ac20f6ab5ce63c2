"""Fast checks of the worker's runner pieces, without torchrun, a broker or a database server:
how an attempt ends (``worker.outcome``, every branch), the launchers (a real tiny ``python -c``
child locally; fake ``sbatch``/``squeue``/``scontrol``/``scancel`` scripts on PATH for Slurm), the
attempt's lease-checked writes and its wait through a database outage (a migrated SQLite file that
is away for a moment), and a whole ``JobRunner`` delivery whose training process is a tiny child."""
from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from server.db import Database
from server.leases import LeaseLost
from server.lifecycle import PRUNE_REASON
from server.models import Artifact, Job, MetricPoint, utcnow
from server.settings import Settings
from server.vocabulary import CANCELLED, EXPORTING, FAILED, IN_PROGRESS_STATES, PRUNED, QUEUED, RUNNING, SUCCEEDED
from tests.helpers import TINY_RECIPE, job_config, migrated_database, torchrun_summary
from worker import launch
from worker.artifacts import add_row, register_file
from worker.attempt import Attempt
from worker.launchers import LocalLauncher, LocalRun, launcher_for
from worker.lease import LeaseKeeper
from worker.outcome import (
    CANCEL,
    CONTINUE,
    DETACH,
    EXPORT,
    FAIL,
    LEASE_LOST,
    LOSE,
    REQUEUE,
    RETRY,
    STOP,
    SUCCEED,
    TRAIN,
    WORKER_STOPPING,
    StepErrors,
    StopRequest,
    attempt_outcome,
)
from worker.progress import ProgressWriter
from worker.run_contract import BAD_CONFIG, EXIT_LEASE_EXPIRED, EXPORT_GATE_FAILED
from worker.runner import JobRunner
from worker.slurm import SlurmLauncher, SlurmRun
from worker.supervise import supervise

PY = sys.executable

# ------------------------------------------------------------------------------------------------
# worker.outcome: a pure function, every branch
# ------------------------------------------------------------------------------------------------
TORCHRUN_SUMMARY = torchrun_summary()


def test_training_that_ended_well_goes_on_and_an_export_that_ended_well_succeeds():
    assert attempt_outcome(TRAIN, 0).action == CONTINUE
    done = attempt_outcome(EXPORT, 0)
    assert (done.action, done.state, done.from_states) == (SUCCEED, SUCCEEDED, (EXPORTING,))


def test_a_config_the_engine_rejects_fails_at_once_with_its_error_and_fails_the_dependants():
    out = attempt_outcome(TRAIN, BAD_CONFIG, StepErrors("$ torchrun ...\nlast words\n", engine_error="data.train: no images"))
    assert (out.action, out.state, out.fail_children) == (FAIL, FAILED, True)
    assert out.reason == "training failed (exit 2): data.train: no images"
    assert out.from_states == IN_PROGRESS_STATES


def test_the_parity_gate_fails_the_export_keeping_its_report_and_says_why():
    out = attempt_outcome(EXPORT, EXPORT_GATE_FAILED, StepErrors(error_file=json.dumps({"error": "top-1 dropped 4.1 points"})))
    assert (out.action, out.state, out.from_states, out.keep_rejected_report) == (FAIL, FAILED, (EXPORTING,), True)
    assert out.reason == "export parity gate failed: top-1 dropped 4.1 points"
    assert not out.fail_children  # the dependants already got the checkpoint


def test_an_export_that_recorded_no_reason_points_at_the_log():
    out = attempt_outcome(EXPORT, 1, StepErrors("$ distillery export ...\nline a\n\nline b\n", error_file="not json"))
    assert out.reason == "export failed (exit 1): exit code 1, no reason recorded; see the log (line a | line b)"
    assert (out.action, out.keep_rejected_report) == (FAIL, False)


def test_a_killed_rank_is_named_and_the_run_is_started_again():
    out = attempt_outcome(TRAIN, 1, StepErrors(TORCHRUN_SUMMARY, engine_error="RuntimeError: Connection reset by peer"))
    assert out.action == RETRY and out.state is None
    assert out.reason == ("training failed (exit 1): rank 1 was killed by SIGKILL (exit code -9, pid 101); "
                          "the other rank(s) (0) stopped after it")


def test_a_crash_says_what_it_can_and_slurm_speaks_first():
    assert attempt_outcome(TRAIN, 1).reason == "training failed (exit 1): exit code 1"
    assert attempt_outcome(TRAIN, 1, StepErrors("$ cmd\nSegmentation fault\n")).reason == \
        "training failed (exit 1): Segmentation fault"
    out = attempt_outcome(TRAIN, 1, StepErrors(launcher="Slurm job 7 hit its time limit (state TIMEOUT, exit code 0:15)"))
    assert out.action == RETRY
    assert out.reason.startswith("Slurm job 7 hit its time limit (state TIMEOUT, exit code 0:15); training failed (exit 1)")


def test_a_cancel_ends_cancelled_and_a_prune_ends_pruned_both_cancelling_the_dependants():
    out = attempt_outcome(TRAIN, None, stop=StopRequest(CANCEL))
    assert (out.action, out.state, out.reason, out.fail_children) == (STOP, CANCELLED, "cancelled by user", True)
    why = f"{PRUNE_REASON} 4 (median pruner) at epoch 2: val top-1 11.00%"
    out = attempt_outcome(EXPORT, 0, stop=StopRequest(CANCEL, state=PRUNED, reason=why))  # the stop wins over the exit
    assert (out.action, out.state, out.reason) == (STOP, PRUNED, why)


def test_a_stopping_worker_hands_the_job_back_or_leaves_a_slurm_job_running():
    assert attempt_outcome(TRAIN, None, stop=StopRequest(WORKER_STOPPING)).action == REQUEUE
    assert attempt_outcome(TRAIN, None, stop=StopRequest(WORKER_STOPPING, detach=True)).action == DETACH


def test_a_lost_lease_writes_nothing_whatever_the_exit_code():
    for step, rc in ((TRAIN, 0), (TRAIN, 1), (EXPORT, 0), (EXPORT, EXPORT_GATE_FAILED)):
        assert attempt_outcome(step, rc, stop=StopRequest(LEASE_LOST)).action == LOSE
    assert attempt_outcome(TRAIN, EXIT_LEASE_EXPIRED).action == LOSE  # the run stopped itself: its lease file ran out
    with pytest.raises(ValueError):
        attempt_outcome(TRAIN, None)  # neither an exit code nor a stop request


# ------------------------------------------------------------------------------------------------
# Launchers
# ------------------------------------------------------------------------------------------------
def test_the_local_launcher_runs_watches_and_stops_a_process_group(tmp_path):
    launcher = LocalLauncher(cwd=tmp_path)
    done = launcher.run_command([PY, "-c", "import sys; print('hello'); sys.exit(4)"], tmp_path / "out.log", dict(os.environ))
    deadline = time.monotonic() + 20
    while (rc := done.poll()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rc == 4
    log = (tmp_path / "out.log").read_text()
    assert log.startswith(f"$ {PY} -c ") and "hello" in log

    slow = launcher.run_command([PY, "-c", "import time; time.sleep(60)"], tmp_path / "out.log", dict(os.environ))
    assert slow.poll() is None and slow.row_values() == {"pid": slow.proc.pid} and not slow.detachable
    assert slow.describe() == f"process group {slow.proc.pid}" and slow.ended_reason() is None
    started = time.monotonic()
    assert slow.stop(grace_s=5, logger=launch.log) != 0
    assert time.monotonic() - started < 5  # SIGTERM was enough
    assert slow.poll() is not None
    with pytest.raises(ValueError, match="dies with its worker"):
        launcher.reattach("123")


def test_the_local_launcher_builds_torchrun_from_the_spec_and_refuses_several_nodes(tmp_path):
    spec = launch.TrainSpec(5, 2, tmp_path, tmp_path / "job.json", nodes=1, processes_per_node=2, resume=True,
                            extra_args=("--teacher-cache-dir", "/c"))
    assert spec.train_args() == ["--config", str(tmp_path / "job.json"), "--output", str(tmp_path), "--resume",
                                 "--teacher-cache-dir", "/c"]
    assert launch.train_command(spec.config_path, spec.run_dir, 2, True, spec.extra_args) == \
        [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "deit_core.train", *spec.train_args()]
    with pytest.raises(ValueError, match="resources.nodes=2 needs a worker with the Slurm launcher"):
        LocalLauncher().start(launch.TrainSpec(5, 2, tmp_path, tmp_path / "job.json", nodes=2), launch.log)
    assert not (tmp_path / "output.log").exists()  # nothing was started
    assert isinstance(launcher_for(Settings()), LocalLauncher)


FAKE_SLURM = {
    # sbatch --parsable SCRIPT: remember the script and the GPUs it was given, answer "<id>;<cluster>"
    "sbatch": """cp "$2" "$SLURM_FAKE/submitted.sbatch"; echo "${CUDA_VISIBLE_DEVICES-unset}" > "$SLURM_FAKE/gpus"
                 echo RUNNING > "$SLURM_FAKE/state"; echo 0:0 > "$SLURM_FAKE/exit"; echo '4242;cluster'""",
    "scontrol": """state=$(cat "$SLURM_FAKE/state"); code=$(cat "$SLURM_FAKE/exit")
                   echo "JobId=$4 JobName=x JobState=$state Reason=None ExitCode=$code" """,
    "squeue": """s=$(cat "$SLURM_FAKE/state"); case "$s" in RUNNING|PENDING) echo "$s";; esac""",
    "scancel": """echo "$1" >> "$SLURM_FAKE/scancelled"; echo CANCELLED > "$SLURM_FAKE/state"; echo 0:15 > "$SLURM_FAKE/exit" """,
    "sacct": "exit 1",
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """Slurm's client commands as small shell scripts over a state file (no cluster)."""
    bin_dir, state = tmp_path / "slurm-bin", tmp_path / "slurm-state"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in FAKE_SLURM.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + textwrap.dedent(body).strip() + "\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_FAKE", str(state))
    return state


def test_the_slurm_launcher_submits_the_spec_as_data_then_polls_and_cancels(tmp_path, fake_slurm):
    settings = Settings(storage=str(tmp_path / "storage")).replace(launcher="slurm", slurm_poll_s=0.0)
    launcher = launcher_for(settings)
    assert isinstance(launcher, SlurmLauncher) and launcher.lease_file_grace_s() >= 600
    run_dir = tmp_path / "runs" / "9" / "attempt-3"
    run_dir.mkdir(parents=True)
    spec = launch.TrainSpec(9, 3, run_dir, run_dir / "job.json", nodes=2, processes_per_node=3, resume=True,
                            extra_args=("--teacher-cache-dir", "/store"))
    run = launcher.start(spec, launch.log)
    assert isinstance(run, SlurmRun) and run.detachable
    assert run.row_values() == {"pid": None, "launcher": "slurm", "launcher_job_id": "4242"}
    script = (fake_slurm / "submitted.sbatch").read_text()
    assert script == (run_dir / "slurm.sbatch").read_text()
    srun = next(ln for ln in script.splitlines() if ln.startswith("srun "))
    assert "--nnodes 2 --nproc_per_node 3" in srun and "--rdzv-id 9-3" in srun
    assert srun.endswith(f"-m deit_core.train --config {run_dir}/job.json --output {run_dir} --resume "
                         "--teacher-cache-dir /store")
    assert (fake_slurm / "gpus").read_text().strip() == ""  # no GPUs from Slurm: a CPU run
    assert "$ sbatch --parsable" in (run_dir / "output.log").read_text()

    assert run.poll() is None  # RUNNING
    (fake_slurm / "state").write_text("FAILED\n")
    (fake_slurm / "exit").write_text("1:0\n")
    assert run.poll() == 1
    assert run.ended_reason().startswith("Slurm job 4242 failed (state FAILED")

    again = launcher.reattach("4242")  # a later worker supervises the same job
    (fake_slurm / "state").write_text("RUNNING\n")
    assert again.poll() is None and again.describe() == "Slurm job 4242"
    assert again.stop(grace_s=1, logger=launch.log) == 128 + 15
    assert (fake_slurm / "scancelled").read_text().split() == ["4242"]


# ------------------------------------------------------------------------------------------------
# The attempt: lease-checked writes, a database outage waited out
# ------------------------------------------------------------------------------------------------
OWNER = "host:1#1"


def migrated(path: Path) -> Database:
    return migrated_database(f"sqlite:///{path}")


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    """One migrated SQLite file, copied for each test (migrating takes a moment)."""
    path = tmp_path_factory.mktemp("template") / "d.db"
    migrated(path).dispose()
    return path


@pytest.fixture
def db(template_db, tmp_path) -> Database:
    shutil.copy(template_db, tmp_path / "d.db")
    database = Database(f"sqlite:///{tmp_path / 'd.db'}")
    yield database
    database.dispose()


def running_job(database: Database, owner: str = OWNER, **values) -> int:
    """A job in its first attempt, running under ``owner``'s lease."""
    now = utcnow()
    with database.session() as s:
        job = Job(owner_id=1, name="j", kind="teacher", config=job_config("teacher", "/data", TINY_RECIPE), state=RUNNING,
                  attempt=1, progress={}, metrics={}, attempt_history=[], lease_owner=owner, heartbeat_at=now,
                  lease_expires_at=now + timedelta(seconds=60), **values)
        s.add(job)
        s.flush()
        return job.id


def attempt_of(database: Database, job_id: int, run_dir: Path, outage_s: float = 5.0) -> Attempt:
    keeper = LeaseKeeper(database, job_id, 1, OWNER, 30.0, run_dir)  # not started: the test plays the heartbeat
    return Attempt(database, job_id, 1, OWNER, keeper, launch.log, outage_s=outage_s, retry_every_s=0.05)


def take_over(database: Database, job_id: int) -> None:
    """Another worker took the job over (its lease looked expired)."""
    with database.session() as s:
        s.get(Job, job_id).lease_owner = "other:2#1"


def test_writes_go_through_while_the_lease_is_held_and_stop_when_it_is_lost(db, tmp_path):
    job_id = running_job(db)
    attempt = attempt_of(db, job_id, tmp_path)
    (tmp_path / "model.bin").write_bytes(b"weights")
    art_id = register_file(attempt, tmp_path / "artifacts", tmp_path / "model.bin", "checkpoint", "checkpoint")
    attempt.record_launch({"pid": 4321}, must_reach=True)
    with db.session() as s:
        assert s.get(Artifact, art_id).path == str(tmp_path / "artifacts" / str(job_id) / "attempt-1" / "model.bin")
        assert s.get(Job, job_id).pid == 4321
    assert attempt.move(RUNNING, EXPORTING) and not attempt.lost

    take_over(db, job_id)
    with pytest.raises(LeaseLost):
        add_row(attempt, kind="report", format="report", path="/x", size=1, sha256="0" * 64, meta={})
    assert attempt.lost and attempt.keeper.lost.is_set()  # the heartbeat's event: the run's lease file expires
    with pytest.raises(LeaseLost):
        attempt.retried(lambda s: 1)  # nothing more is even tried
    assert not attempt.finish(FAILED, error="too late")
    with db.session() as s:
        job = s.get(Job, job_id)
        assert s.query(Artifact).count() == 1 and (job.state, job.error) == (EXPORTING, None)


def test_a_lease_lost_before_a_launch_is_recorded_stops_the_run(db, tmp_path):
    job_id = running_job(db)
    attempt = attempt_of(db, job_id, tmp_path)
    take_over(db, job_id)
    attempt.record_launch({"pid": 99}, must_reach=False)
    assert attempt.lost
    with db.session() as s:
        assert s.get(Job, job_id).pid is None


def test_finishing_under_the_lease_moves_the_state_once(db, tmp_path):
    job_id = running_job(db)
    attempt = attempt_of(db, job_id, tmp_path)
    assert attempt.finish(FAILED, error="training failed (exit 2): bad")
    assert attempt.keeper.ending  # a refused heartbeat is now expected
    assert not attempt.finish(SUCCEEDED)  # already final
    with db.session() as s:
        job = s.get(Job, job_id)
        assert (job.state, job.error, job.attempt_history[-1]["outcome"]) == (FAILED, "training failed (exit 2): bad", FAILED)


def test_a_cancel_or_a_prune_is_read_as_a_stop_request(db, tmp_path):
    job_id = running_job(db, trial_number=0)
    attempt = attempt_of(db, job_id, tmp_path)
    assert not attempt.cancel_requested()
    with db.session() as s:
        s.get(Job, job_id).cancel_requested = True
    assert attempt.cancel_requested()
    assert attempt.stop_request() == StopRequest(CANCEL, CANCELLED, "cancelled by user")
    why = f"{PRUNE_REASON} 3 (median pruner) at epoch 1: val top-1 9.00%"
    with db.session() as s:  # lifecycle.prune's mark: stop_reason, not the text of error
        job = s.get(Job, job_id)
        job.error, job.stop_reason = why, PRUNED
    assert attempt.stop_request() == StopRequest(CANCEL, PRUNED, why)


def test_a_database_outage_is_waited_out_then_the_write_goes_through(template_db, tmp_path):
    ready, live = tmp_path / "ready", tmp_path / "live"
    ready.mkdir()
    shutil.copy(template_db, ready / "d.db")
    job_id = running_job(Database(f"sqlite:///{ready / 'd.db'}"))
    away = Database(f"sqlite:///{live / 'd.db'}")  # its folder is not there yet: the database is unreachable
    attempt = attempt_of(away, job_id, tmp_path, outage_s=20)
    assert attempt.quietly(lambda s: s.get(Job, job_id)) is None  # a step that may be skipped is skipped
    back = threading.Timer(0.5, lambda: os.rename(ready, live))
    back.start()
    started = time.monotonic()
    try:
        assert attempt.retried(lambda s: s.get(Job, job_id).state) == RUNNING
    finally:
        back.join()
        away.dispose()
    assert time.monotonic() - started >= 0.4


def test_an_outage_longer_than_the_wait_raises(tmp_path):
    away = Database(f"sqlite:///{tmp_path / 'nowhere' / 'd.db'}")
    attempt = attempt_of(away, 1, tmp_path, outage_s=0.2)
    with pytest.raises(OperationalError):
        attempt.retried(lambda s: s.get(Job, 1))
    away.dispose()


def test_progress_is_written_under_the_lease_and_a_validation_point_calls_the_hook(db, tmp_path):
    job_id = running_job(db)
    attempt = attempt_of(db, job_id, tmp_path)
    called = []
    progress = ProgressWriter(attempt, tmp_path / "metrics.jsonl", on_val_point=lambda: called.append(1))
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"event": "step", "epoch": 1, "epochs": 2, "step": 1, "steps_per_epoch": 4, "loss": 2.5}) + "\n")
    progress.update()
    assert called == []
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"event": "epoch", "epoch": 1, "epochs": 2, "step": 4, "steps_per_epoch": 4, "val_top1": 30.0}) + "\n")
    progress.update()
    assert called == [1]
    with db.session() as s:
        names = [p.name for p in s.query(MetricPoint).filter_by(job_id=job_id).order_by(MetricPoint.id)]
        assert names == ["loss", "val_top1"] and s.get(Job, job_id).metrics["val_top1"] == 30.0
    take_over(db, job_id)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"event": "step", "epoch": 2, "step": 1, "loss": 2.0}) + "\n")
    with pytest.raises(LeaseLost):
        progress.update()
    assert attempt.lost


# ------------------------------------------------------------------------------------------------
# supervise: a real child, stopped on a cancel or a stopping worker
# ------------------------------------------------------------------------------------------------
def sleeper(tmp_path: Path) -> LocalRun:
    return LocalLauncher(cwd=tmp_path).run_command([PY, "-c", "import time; time.sleep(60)"], tmp_path / "o.log",
                                                   dict(os.environ))


def test_a_cancel_stops_the_child_and_a_stopping_worker_too(db, tmp_path):
    job_id = running_job(db)
    attempt = attempt_of(db, job_id, tmp_path)
    run = sleeper(tmp_path)
    with db.session() as s:
        s.get(Job, job_id).cancel_requested = True
    ended = supervise(run, attempt, threading.Event(), poll_s=0.05, grace_s=5)
    assert ended.exit_code is None and ended.stop == StopRequest(CANCEL)
    assert run.poll() is not None
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job.pid == run.proc.pid
        job.cancel_requested = False
    stopping = threading.Event()
    stopping.set()
    run = sleeper(tmp_path)
    ended = supervise(run, attempt, stopping, poll_s=0.05, grace_s=5)
    assert ended.stop == StopRequest(WORKER_STOPPING) and run.poll() is not None


# ------------------------------------------------------------------------------------------------
# A whole delivery: JobRunner with a tiny child in place of torchrun
# ------------------------------------------------------------------------------------------------
class TinyLauncher(LocalLauncher):
    """Runs ``code`` with python instead of torchrun (what a launcher is asked to start is data)."""

    def __init__(self, code: str):
        super().__init__()
        self.code, self.specs = code, []

    def start(self, spec, logger):
        self.specs.append(spec)
        return self.run_command([PY, "-c", self.code], spec.run_dir / "output.log", {**os.environ, "RUN": str(spec.run_dir)})


def runner_for(db: Database, tmp_path: Path, job_id: int, code: str) -> JobRunner:
    settings = Settings(database_url=db.url, storage=str(tmp_path / "storage"), poll_s=0.05, lease_s=30.0)
    hooks: list[int] = []
    runner = JobRunner(None, settings, db, job_id, sweep_hook=hooks.append)
    runner.launcher = TinyLauncher(code)
    runner.hooks = hooks
    return runner


def queued_job(database: Database, cfg: dict, **values) -> int:
    with database.session() as s:
        job = Job(owner_id=1, name="j", kind=cfg["kind"], config=cfg, state=QUEUED, attempt=1, progress={}, metrics={},
                  attempt_history=[], **values)
        s.add(job)
        s.flush()
        return job.id


def test_a_delivery_whose_engine_rejects_the_config_fails_it_and_its_dependants(db, tmp_path):
    cfg = job_config("teacher", "/data", TINY_RECIPE, processes=2)
    job_id = queued_job(db, cfg)
    child = queued_job(db, job_config("distill", "/data", TINY_RECIPE), parent_id=job_id)
    code = ("import json, sys; print(json.dumps({'event': 'error', 'message': 'data.train: no images'}), "
            "file=open('metrics.jsonl', 'w')); sys.exit(2)")
    runner = runner_for(db, tmp_path, job_id, f"import os; os.chdir(os.environ['RUN']); {code}")
    assert runner.run() == FAILED
    spec = runner.launcher.specs[0]
    assert (spec.nodes, spec.processes_per_node, spec.resume) == (1, 2, False)  # read from the typed config
    assert json.loads(spec.config_path.read_text())["resources"]["processes"] == 2
    assert runner.hooks == [job_id]  # the sweep was consulted once, after the delivery
    with db.session() as s:
        job, dependant = s.get(Job, job_id), s.get(Job, child)
        assert (job.state, job.error) == (FAILED, "training failed (exit 2): data.train: no images")
        assert job.attempt_history[-1]["outcome"] == FAILED and job.pid is None  # finish clears the pid
        assert (dependant.state, dependant.error) == (FAILED, f"teacher job {job_id} failed")


def test_a_delivery_cancelled_while_it_trains_ends_cancelled(db, tmp_path):
    job_id = queued_job(db, job_config("teacher", "/data", TINY_RECIPE))
    runner = runner_for(db, tmp_path, job_id, "import time; time.sleep(60)")

    def cancel_when_running():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with db.session() as s:
                job = s.get(Job, job_id)
                if job.pid is not None:
                    job.cancel_requested = True
                    return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    started = time.monotonic()
    assert runner.run() == CANCELLED
    canceller.join()
    assert time.monotonic() - started < 20
    with db.session() as s:
        job = s.get(Job, job_id)
        assert (job.state, job.error) == (CANCELLED, "cancelled by user")
