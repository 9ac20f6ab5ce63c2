"""One delivery of the run task: claim a job, train, export, register artifacts, release or fail
dependants. Every state change goes through :mod:`server.lifecycle`.

Tasks take a job id, reload everything from the database and keep no ORM object across steps,
so the session is short-lived even when the run takes hours. Every log record carries the job id.

The attempt runs under a lease (``worker.lease``): every write for it (progress, metric points,
artifacts, released children, the final state) is fenced by ``lifecycle.lease_held``/``fence``, so a
worker that lost the job (it looked dead and the job was restarted elsewhere) cannot write over the
new attempt. The database may go away for a while: progress and metric points are buffered and
written when it is back, and the steps that must reach it wait for it.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import func, insert, select, update

from deit_core.files import sha256_file
from deit_core.lease import EXIT_LEASE_EXPIRED
from server import lifecycle
from server.db import Database, database_unavailable
from server.models import Artifact, Job, MetricPoint, utcnow
from server.settings import Settings
from server.storage import link_or_copy
from server.vocabulary import CANCELLED, EXPORTING, FAILED, IN_PROGRESS_STATES, QUEUED, RUNNING, SUCCEEDED, TEACHER

from . import launch, slurm, sweep
from . import teacher_cache as caches
from .launchers import LocalRun
from .lease import LeaseKeeper, LocalLeases, wait_for_earlier_attempts
from .rank_failure import failure_reason
from .registry import worker_name
from .retention import prune_attempts
from .tail import MetricsTail, RunProgress

logger = logging.getLogger(__name__)

EXPORT_FILES = {  # file in the export dir -> (artifact kind, format)
    "model.ptl": ("mobile", "ptl"),
    "model.pte": ("mobile", "pte"),
    "model_int8.pt": ("server", "pt"),
    "labels.json": ("metadata", "labels"),
    "report.json": ("report", "report"),
}
EXPORT_GATE_FAILED = 3
BAD_CONFIG = 2  # the engine's exit code for a config it rejects: no retry can fix it


class JobLog(logging.LoggerAdapter):
    """Prefixes every message with the job id (and puts it in ``record.job_id``)."""

    def process(self, msg, kwargs):
        kwargs.setdefault("extra", {})["job_id"] = self.extra["job_id"]
        return f"[job {self.extra['job_id']}] {msg}", kwargs


class Cancelled(Exception):
    """The user asked to cancel; the processes are already stopped."""


class WorkerStopping(Exception):
    """The worker is shutting down (SIGTERM); the run's processes are already stopped."""


class Detached(Exception):
    """The worker is shutting down and left the run (a Slurm job) going: the next worker re-attaches."""


class LeaseLost(Exception):
    """This worker no longer holds the attempt's lease; the run's processes are already stopped and
    nothing more may be written for the attempt."""


class JobRunner:
    """Runs one job from ``queued`` to a final state. One instance per delivery."""

    def __init__(self, celery: Celery, settings: Settings, database: Database, job_id: int,
                 stopping: threading.Event | None = None, local_leases: LocalLeases | None = None):
        self.celery, self.settings, self.db, self.job_id = celery, settings, database, job_id
        self.stopping = stopping or threading.Event()
        self.local_leases = local_leases
        self.log = JobLog(logger, {"job_id": job_id})
        self.worker_name = worker_name(settings)  # DISTILLERY_WORKER_NAME or host:pid (worker.registry)
        self._pending_points: list[dict[str, Any]] = []
        self._db_down = False
        self._dirty = False  # progress not yet written
        self.points_after: int | None = None  # metric points up to this step are stored (re-attach)
        self.is_trial = False  # a sweep's trial: its sweep is advanced after each epoch

    # -- entry ------------------------------------------------------------------------------------
    def run(self) -> str:
        with self.db.session() as s:
            job = s.get(Job, self.job_id)
            if job is None:
                self.log.warning("no such job; ignoring the message")
                return "missing"
            attempt = job.attempt
            if self.stopping.is_set() and job.state == QUEUED:
                # Messages are acked on receipt; one taken during shutdown is handed back, not lost.
                lifecycle.enqueue(s, self.celery, self.settings, self.job_id)
                self.log.info("worker shutting down; message handed back to the queue")
                return "deferred"
            self.run_dir = self.settings.runs_path / str(self.job_id) / f"attempt-{attempt}"
            self.owner = f"{self.worker_name}#{attempt}"
            if not lifecycle.claim(s, self.job_id, attempt, self.worker_name, str(self.run_dir), self.owner,
                                   self.settings.lease_s):
                self.log.info("not queued (state %s); duplicate or cancelled delivery, nothing to do", job.state)
                return "skipped"
        self.attempt = attempt
        self.lease = (attempt, self.owner)
        self.log.info("claimed attempt %d (lease %s); run directory %s", attempt, self.owner, self.run_dir)
        self.keeper = LeaseKeeper(self.db, self.job_id, attempt, self.owner, self.settings.lease_s, self.run_dir,
                                  self.local_leases, self.log, file_grace_s=self._lease_file_grace())
        self.keeper.start()
        return self._guarded(self._run)

    def reattach(self, attempt: int, owner: str, run: slurm.SlurmRun) -> str:
        """Supervise attempt ``attempt``'s Slurm job, still running (or ended) after its worker
        stopped, under the lease this worker just took over (``lifecycle.take_over_lease``); then
        go on as if this worker had started it (export, artifacts, final state)."""
        with self.db.session() as s:
            job = s.get(Job, self.job_id)
            self.run_dir = Path(job.run_dir)
            self.points_after = s.scalar(select(func.max(MetricPoint.step)).where(
                MetricPoint.job_id == self.job_id, MetricPoint.attempt == attempt))
        self.attempt, self.owner, self.lease = attempt, owner, (attempt, owner)
        self.log.info("re-attached to attempt %d's %s (lease %s)", attempt, run.describe(), owner)
        self.keeper = LeaseKeeper(self.db, self.job_id, attempt, owner, self.settings.lease_s, self.run_dir,
                                  self.local_leases, self.log, file_grace_s=self._lease_file_grace())
        self.keeper.start()
        return self._guarded(lambda: self._run(attached=run))

    def _lease_file_grace(self) -> float:
        return slurm.lease_file_grace_s(self.settings) if self.settings.launcher == "slurm" else 0.0

    def _guarded(self, body) -> str:
        """``body()`` with every way an attempt can end mapped to the job's state."""
        attempt = self.attempt
        try:
            return body()
        except Detached:
            self.keeper.keep_file = True  # the run goes on; its lease file must outlive this worker
            self.log.info("worker shutting down; left %s running for the next worker to re-attach",
                          self._launched.describe())
            return "detached"
        except Cancelled:  # by a user, or (a sweep's trial) by its pruner: then it ends pruned
            state, reason = self._quietly(lambda s: lifecycle.stop_outcome(s.get(Job, self.job_id))) or \
                (CANCELLED, "cancelled by user")
            self._finish(state, error=reason)
            self._fail_children("was cancelled", state=CANCELLED)
            return state
        except WorkerStopping:
            return self._requeue()
        except LeaseLost:
            self.log.warning("lost the lease of attempt %d; its run is stopped and nothing more is written", attempt)
            return "lease_lost"
        except Exception as e:  # anything unexpected ends the job failed, with the reason
            self.log.exception("failed")
            self._finish(FAILED, error=f"{type(e).__name__}: {e}")
            self._fail_children("failed")
            return FAILED
        finally:
            self.keeper.stop()

    def _run(self, attached: slurm.SlurmRun | None = None) -> str:
        with self.db.session() as s:
            job = s.get(Job, self.job_id)
            kind, config = job.kind, self._resolve(s, job.config)
            self.is_trial = job.trial_number is not None
        if attached is not None:  # re-attached: the run was started by an earlier worker
            tail = RunProgress()
            return self._after_training(self._supervise([], {}, tail=tail, run=attached), tail, kind, config)
        wait_for_earlier_attempts(self.run_dir.parent, self.attempt, self.settings.lease_s,
                                  lambda: self.stopping.is_set() or self.keeper.lost.is_set(), self.log)
        self._check_lease()
        (self.run_dir / "job.json").write_text(json.dumps(config, indent=2))
        processes = int(config.get("resources", {}).get("processes", 1))

        # 1. train
        env = launch.child_env(self.settings.worker_gpus, processes)
        resume = self._carry_over_checkpoint(config)
        pruned = prune_attempts(self.run_dir.parent, self.attempt, self.settings.keep_attempts)
        if pruned:
            self.log.info("removed old run directories %s (DISTILLERY_KEEP_ATTEMPTS=%d)",
                          [p.name for p in pruned], self.settings.keep_attempts)
        cmd = launch.train_command(self.run_dir / "job.json", self.run_dir, processes, resume=resume)
        cmd += caches.train_args(self.settings)  # the teacher-output cache store and cap (worker/teacher_cache.py)
        run = None
        if self.settings.launcher == "slurm":  # sbatch: srun + torchrun on each node (worker/slurm.py)
            env = launch.child_env((), int(config["resources"].get("nodes", 1)) * processes)
            run = slurm.start_training(self.settings, self.job_id, self.attempt, self.run_dir, config["resources"],
                                       cmd[cmd.index("deit_core.train") + 1:], env, self.log)
        elif int(config["resources"].get("nodes", 1)) > 1:  # torchrun --standalone would shrink the world
            raise ValueError(f"resources.nodes={config['resources']['nodes']} needs a worker with the Slurm launcher "
                             "(DISTILLERY_LAUNCHER=slurm); this worker runs on one host")
        else:
            self.log.info("training: %s", " ".join(cmd))
        tail = RunProgress()
        rc = self._supervise(cmd, env, tail=tail, run=run)
        return self._after_training(rc, tail, kind, config)

    def _after_training(self, rc: int, tail: RunProgress, kind: str, config: dict[str, Any]) -> str:
        if rc != 0:
            return self._training_failed(rc, tail)
        if kind == caches.TEACHER_OUTPUTS:  # no model, no export: register the cache, release the students
            if not caches.finish_teacher_outputs(self):
                self._check_lease()
                raise Cancelled()
            self.log.info("succeeded")
            return SUCCEEDED

        # 2. checkpoint (a pipeline's distill job can start from here)
        moved = self._with_db(lambda s: lifecycle.transition(s, self.job_id, RUNNING, EXPORTING,
                                                             where=lifecycle.lease_held(*self.lease)))
        if not moved:
            self._check_lease()
            raise Cancelled()
        ckpt_id = self._register_checkpoint(self.run_dir / "final")
        caches.register(self)  # a teacher-output cache this run wrote ("auto"), for later students
        if kind == TEACHER:
            released = self._with_db(lambda s: lifecycle.release_children(
                s, self.celery, self.settings, s.get(Job, self.job_id), ckpt_id, lease=self.lease))
            if released:
                self.log.info("released dependent jobs %s with checkpoint artifact %d", released, ckpt_id)

        # 3. export
        return self._export(config)

    def _export(self, config: dict[str, Any]) -> str:
        """Run the exporter; it says why it failed in ``export.error.json`` (exit 3: parity gate)."""
        out = self.run_dir / "export"
        rejected = self.run_dir / "export.rejected"
        error_file = self.run_dir / "export.error.json"
        for d in (out, rejected):
            shutil.rmtree(d, ignore_errors=True)
        error_file.unlink(missing_ok=True)
        cmd = launch.export_command(self.run_dir / "final", out, config["data"].get("val"), self.settings.export_args,
                                    error_file=error_file)
        self.log.info("exporting: %s", " ".join(cmd))
        rc = self._supervise(cmd, launch.child_env(self.settings.worker_gpus[:1], 1))
        if rc == 0:
            self._register_export(out)
            if not self._finish(SUCCEEDED, from_states=EXPORTING):
                self._check_lease()
                raise Cancelled()
            self.log.info("succeeded")
            return SUCCEEDED
        err = read_error_file(error_file) or f"exit code {rc}, no reason recorded; see the log ({self._last_lines()})"
        if rc == EXPORT_GATE_FAILED:
            if (rejected / "report.json").exists():
                self._register(rejected / "report.json", "report", "report", {"rejected": True})
            reason = f"export parity gate failed: {err}"
        else:
            reason = f"export failed (exit {rc}): {err}"
        self.log.warning(reason)
        self._finish(FAILED, from_states=EXPORTING, error=reason)
        return FAILED

    def _training_failed(self, rc: int, tail: RunProgress) -> str:
        """A run that crashed is started again as a new attempt (from its last checkpoint), up to
        ``max_attempts`` in a row; a config the engine rejects (exit 2) fails at once."""
        self._check_lease()
        if rc == EXIT_LEASE_EXPIRED:
            raise LeaseLost()
        # torchrun's summary names a rank that was killed (the others then fail with gloo errors)
        cause = failure_reason(self.run_dir / "output.log", tail.error)
        reason = f"training failed (exit {rc}): {cause or self._last_lines() or f'exit code {rc}'}"
        if (ended := self._launched.ended_reason()) is not None:  # Slurm's state and reason come first
            reason = f"{ended}; {reason}"
        self.log.warning(reason)
        self.keeper.ending = True
        if rc == BAD_CONFIG:
            self._finish(FAILED, error=reason)
            self._fail_children("failed")
            return FAILED
        outcome = self._with_db(lambda s: lifecycle.restart_or_fail(
            s, self.celery, self.settings, self.job_id, self.attempt, FAILED, reason,
            where=lifecycle.lease_held(*self.lease)))
        if outcome == FAILED:
            self._fail_children("failed")
        elif outcome is None:
            self._check_lease()
            self.log.warning("could not restart or fail (state changed meanwhile)")
        else:
            self.log.info("queued attempt %d (resumes from the last checkpoint)", self.attempt + 1)
        return outcome or FAILED

    # -- the database, which may be away for a while ----------------------------------------------
    def _check_lease(self) -> None:
        if self.keeper.lost.is_set():
            raise LeaseLost()

    def _with_db(self, fn, what: str = "the database"):
        """``fn(session)``, retried every second while the database is unreachable (the run's lease
        file stays alive meanwhile, see ``worker.lease``), for up to max(300 s, 10 leases)."""
        deadline = time.monotonic() + max(300.0, 10 * self.settings.lease_s)
        told = False
        while True:
            self._check_lease()
            try:
                with self.db.session() as s:
                    return fn(s)
            except Exception as e:
                if not database_unavailable(e) or time.monotonic() > deadline:
                    raise
                if not told:
                    self.log.warning("waiting for %s: %s", what, str(e).splitlines()[0][:200])
                    told = True
            time.sleep(1.0)

    # -- helpers ----------------------------------------------------------------------------------
    def _resolve(self, s, config: dict[str, Any]) -> dict[str, Any]:
        """Artifact ids -> checkpoint folders, so the engine only ever sees paths."""
        config = json.loads(json.dumps(config))
        refs = [("teacher", "checkpoint")]
        if config.get("student"):
            refs.append(("student", "init"))
        for section, key in refs:
            value = config.get(section, {}).get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                art = s.get(Artifact, value)
                if art is None or art.format != "checkpoint":
                    raise ValueError(f"{section}.{key}: checkpoint artifact {value} no longer exists")
                config[section][key] = str(Path(art.path).parent)
        caches.resolve_name(s, config)  # distillation.teacher_cache: a cache artifact's name -> its folder
        return config

    def _supervise(self, cmd: list[str], env: dict[str, str], tail: RunProgress | None = None, run=None) -> int:
        """Run ``cmd`` (or supervise ``run``, a started Slurm job); stream metrics into the DB; stop
        it if a cancel is requested. A Slurm job is left running when the worker stops."""
        proc = self._launched = run or LocalRun(launch.start(cmd, self.run_dir / "output.log", env, cwd=Path.cwd()))
        try:  # a Slurm job id must reach the row (a restarted worker re-attaches by it); a pid may wait
            (self._with_db if run is not None else self._quietly)(
                lambda s: lifecycle.record_launch(s, self.job_id, self.lease, **proc.row_values()))
        except (lifecycle.LeaseLostError, LeaseLost):
            self.keeper.lost.set()  # stopped just below
        reader = MetricsTail(self.run_dir / "metrics.jsonl") if tail is not None else None
        while True:
            rc = proc.poll()
            if reader is not None:
                try:
                    self._apply(reader, tail)
                except LeaseLost:
                    rc = None
            if self.keeper.lost.is_set():
                self.log.warning("lease lost; stopping %s", proc.describe())
                proc.stop(self.settings.cancel_grace_s, self.log)
                raise LeaseLost()
            if rc is not None:
                if reader is not None and self._pending_points:
                    self._with_db(lambda s: self._write_progress(s, tail), "the database to store the last metrics")
                return rc
            cancel = self._quietly(lambda s: s.scalar(select(Job.cancel_requested).where(Job.id == self.job_id)))
            if cancel:
                self.log.info("cancel requested; stopping %s", proc.describe())
                proc.stop(self.settings.cancel_grace_s, self.log)
                raise Cancelled()
            if self.stopping.is_set():
                if proc.detachable:
                    raise Detached()
                self.log.info("worker shutting down; stopping %s", proc.describe())
                proc.stop(self.settings.cancel_grace_s, self.log)
                raise WorkerStopping()
            time.sleep(self.settings.poll_s)

    def _carry_over_checkpoint(self, config: dict[str, Any]) -> bool:
        """A later attempt (a retry, or a run requeued when its worker stopped) continues from the
        newest earlier attempt's ``last.pt`` when that attempt ran the same config, instead of
        throwing away hours of training. Returns whether the run should ``--resume``."""
        for earlier in range(self.attempt - 1, 0, -1):
            prev = self.settings.runs_path / str(self.job_id) / f"attempt-{earlier}"
            src = prev / "checkpoints"
            try:
                same = json.loads((prev / "job.json").read_text()) == config
            except (OSError, ValueError):
                continue
            # last.pt, the last.prev.pt it replaced, and their sha256 sidecars: the engine takes
            # the newest intact one (deit_core.checkpoint.latest_valid). Files are only ever
            # replaced by rename, never written in place, so hard links are safe and cost no space.
            files = [f for f in src.glob("last*") if f.name.split(".sha256")[0] in ("last.pt", "last.prev.pt")] \
                if src.is_dir() else []
            if same and any(f.suffix == ".pt" for f in files):
                for f in files:
                    link_or_copy(f, self.run_dir / "checkpoints" / f.name)
                self.log.info("resuming from attempt %d's checkpoints %s", earlier, sorted(f.name for f in files))
                return True
        return False

    def _requeue(self) -> str:
        """The worker is stopping mid-run: put the job back in the queue as a new attempt, so the
        next worker (or this one after a restart) runs it, resuming from the last checkpoint;
        nothing is left half-supervised."""
        self.keeper.ending = True
        try:
            moved = self._with_db(lambda s: lifecycle.new_attempt(
                s, self.celery, self.settings, self.job_id, IN_PROGRESS_STATES, self.attempt, then=lifecycle.HANDED_BACK,
                outcome="worker_stopped", reason="the worker was shut down", where=lifecycle.lease_held(*self.lease)))
        except LeaseLost:
            moved = False
        self.log.warning("worker stopped during the run; %s", "re-queued as a new attempt" if moved else "state changed")
        return "requeued"

    def _quietly(self, fn):
        """``fn(session)`` for a step that may be skipped while the database is away (returns None)."""
        try:
            with self.db.session() as s:
                return fn(s)
        except Exception as e:
            if not database_unavailable(e):
                raise
            return None

    def _apply(self, reader: MetricsTail, tail: RunProgress) -> None:
        """New events -> progress and metric points in the DB. While the database is away the
        points are kept and written, in order, once it answers again."""
        events = reader.read_new()
        if events:
            points = tail.apply(events)
            if self.points_after is not None:  # re-attached: the earlier worker stored these already
                points = [p for p in points if p["step"] > self.points_after]
            self._pending_points += points
            self._dirty = True
        if not self._dirty:
            return
        new_epoch = any(p["name"] == "val_top1" for p in self._pending_points)
        try:
            with self.db.session() as s:
                self._write_progress(s, tail)
        except Exception as e:
            if not database_unavailable(e):
                raise
            if not self._db_down:
                self.log.warning("database unavailable; training goes on, metrics are buffered (%s)",
                                 str(e).splitlines()[0][:200])
            self._db_down = True
            return
        if self._db_down:
            self.log.info("database back; wrote the buffered metrics")
            self._db_down = False
        if new_epoch and self.is_trial:  # a sweep's pruner judges each epoch as it lands, not at the next tick
            try:
                sweep.advance_parent(self.celery, self.settings, self.db, self.job_id)
            except Exception:  # the reconciler advances it later; training goes on
                self.log.exception("advancing the sweep after an epoch failed")

    def _write_progress(self, s, tail: RunProgress) -> None:
        """Progress + pending points in one transaction, under the lease (raises LeaseLost)."""
        if not lifecycle.fence(s, self.job_id, *self.lease):
            s.rollback()
            self.keeper.lost.set()
            raise LeaseLost()
        if self._pending_points:
            s.execute(insert(MetricPoint), [{"job_id": self.job_id, "attempt": self.attempt, **p}
                                            for p in self._pending_points])
        s.execute(update(Job).where(Job.id == self.job_id).values(
            progress=dict(tail.progress), metrics=dict(tail.metrics), updated_at=utcnow()))
        s.commit()
        self._pending_points = []
        self._dirty = False

    def _last_lines(self, n: int = 5) -> str:
        path = self.run_dir / "output.log"
        if not path.exists():
            return ""
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip() and not ln.startswith("$ ")]
        return " | ".join(lines[-n:])

    def _finish(self, state: str, from_states=IN_PROGRESS_STATES, error: str | None = None) -> bool:
        self.keeper.ending = True
        try:
            done = self._with_db(lambda s: lifecycle.finish(s, self.job_id, state, from_states, error, lease=self.lease))
        except LeaseLost:
            done = False
        if not done:
            self.log.warning("could not move to %s (state changed meanwhile, or the lease was lost)", state)
        return done

    def _fail_children(self, reason: str, state: str = FAILED) -> None:
        try:
            failed = self._with_db(lambda s: lifecycle.fail_children(s, s.get(Job, self.job_id), reason, state))
        except LeaseLost:  # the job was restarted elsewhere; its children wait for that attempt
            return
        if failed:
            self.log.info("failed dependent jobs %s", failed)

    def _register(self, src: Path, kind: str, fmt: str, meta: dict[str, Any] | None = None,
                  name: str | None = None) -> int:
        dest = self.settings.artifacts_path / str(self.job_id) / f"attempt-{self.attempt}" / (name or src.name)
        link_or_copy(src, dest)
        size, digest = dest.stat().st_size, sha256_file(dest)

        def add(s) -> int:
            if not lifecycle.fence(s, self.job_id, *self.lease):
                self.keeper.lost.set()
                raise LeaseLost()
            art = Artifact(job_id=self.job_id, kind=kind, format=fmt, path=str(dest), size=size, sha256=digest,
                           meta=meta or {})
            s.add(art)
            s.flush()
            return art.id

        art_id = self._with_db(add)
        self.log.info("registered %s artifact %d (%s)", fmt, art_id, dest.name)
        return art_id

    def _register_checkpoint(self, final: Path) -> int:
        """final/model.safetensors (+ config.json beside it): the folder the engine loads."""
        cfg_path = final / "config.json"
        dest_dir = self.settings.artifacts_path / str(self.job_id) / f"attempt-{self.attempt}" / "checkpoint"
        link_or_copy(cfg_path, dest_dir / "config.json")
        meta: dict[str, Any] = {"files": ["model.safetensors", "config.json"]}
        try:  # config.json is small and is what a client needs to rebuild the model: keep it inline
            model_config = json.loads(cfg_path.read_text())
            meta["architecture"] = model_config.get("architecture")
            meta["config_json"] = model_config
        except (OSError, ValueError, AttributeError):
            pass
        return self._register(final / "model.safetensors", "checkpoint", "checkpoint", meta,
                              name="checkpoint/model.safetensors")

    def _register_export(self, out: Path) -> None:
        """Register every file the exporter wrote; the report's gate result goes into its metadata.
        A missing or unreadable report after a successful export is an error, not something to skip."""
        try:
            report = json.loads((out / "report.json").read_text())
            gate = report["gate"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RuntimeError(f"the exporter exited 0 but its report.json is unreadable: {e}") from e
        for filename, (kind, fmt) in EXPORT_FILES.items():
            if (out / filename).exists():
                self._register(out / filename, kind, fmt, {"gate": gate} if fmt == "report" else {})


def read_error_file(path: Path) -> str:
    """The reason a child process recorded in its JSON error file (``{"error": ...}``), or ''."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    return str(data.get("error") or "") if isinstance(data, dict) else ""
