"""The run task: claim a job, train, export, register artifacts, release or fail dependants.

Tasks take a job id, reload everything from the database and keep no ORM object across steps,
so the session is short-lived even when the run takes hours. Every log record carries the job id.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from celery import Celery
from celery.signals import worker_shutting_down
from sqlalchemy import insert, select, update

from server import jobs as service
from server.db import Database
from server.models import Artifact, Job, MetricPoint, utcnow
from server.settings import Settings
from deit_core.files import sha256_file
from server.storage import link_or_copy

from . import launch
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


class JobLog(logging.LoggerAdapter):
    """Prefixes every message with the job id (and puts it in ``record.job_id``)."""

    def process(self, msg, kwargs):
        kwargs.setdefault("extra", {})["job_id"] = self.extra["job_id"]
        return f"[job {self.extra['job_id']}] {msg}", kwargs


class Cancelled(Exception):
    """The user asked to cancel; the processes are already stopped."""


class WorkerStopping(Exception):
    """The worker is shutting down (SIGTERM); the run's processes are already stopped."""


class JobRunner:
    """Runs one job from ``queued`` to a final state. One instance per delivery."""

    def __init__(self, celery: Celery, settings: Settings, database: Database, job_id: int,
                 stopping: threading.Event | None = None):
        self.celery, self.settings, self.db, self.job_id = celery, settings, database, job_id
        self.stopping = stopping or threading.Event()
        self.log = JobLog(logger, {"job_id": job_id})
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"

    # -- entry ------------------------------------------------------------------------------------
    def run(self) -> str:
        with self.db.session() as s:
            job = s.get(Job, self.job_id)
            if job is None:
                self.log.warning("no such job; ignoring the message")
                return "missing"
            attempt = job.attempt
            if self.stopping.is_set() and job.state == "queued":
                # Messages are acked on receipt; one taken during shutdown is handed back, not lost.
                service.enqueue(s, self.celery, self.settings, self.job_id)
                self.log.info("worker shutting down; message handed back to the queue")
                return "deferred"
            self.run_dir = self.settings.runs_path / str(self.job_id) / f"attempt-{attempt}"
            if not service.transition(s, self.job_id, "queued", "running", started_at=utcnow(),
                                      worker=self.worker_name, run_dir=str(self.run_dir)):
                self.log.info("not queued (state %s); duplicate or cancelled delivery, nothing to do", job.state)
                return "skipped"
        self.attempt = attempt
        self.log.info("claimed attempt %d; run directory %s", attempt, self.run_dir)
        try:
            return self._run()
        except Cancelled:
            self._finish("cancelled", error="cancelled by user")
            self._fail_children("was cancelled", state="cancelled")
            return "cancelled"
        except WorkerStopping:
            return self._requeue()
        except Exception as e:  # anything unexpected ends the job failed, with the reason
            self.log.exception("failed")
            self._finish("failed", error=f"{type(e).__name__}: {e}")
            self._fail_children("failed")
            return "failed"

    def _run(self) -> str:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.db.session() as s:
            job = s.get(Job, self.job_id)
            kind, config = job.kind, self._resolve(s, job.config)
        (self.run_dir / "job.json").write_text(json.dumps(config, indent=2))
        processes = int(config.get("resources", {}).get("processes", 1))

        # 1. train
        env = launch.child_env(self.settings.worker_gpus, processes)
        resume = self._carry_over_checkpoint(config)
        cmd = launch.train_command(self.run_dir / "job.json", self.run_dir, processes, resume=resume)
        self.log.info("training: %s", " ".join(cmd))
        tail = RunProgress()
        rc = self._supervise(cmd, env, tail=tail)
        if rc != 0:
            reason = tail.error or self._last_lines() or f"exit code {rc}"
            self.log.warning("training failed (exit %s): %s", rc, reason)
            self._finish("failed", error=f"training failed (exit {rc}): {reason}")
            self._fail_children("failed")
            return "failed"

        # 2. checkpoint (a pipeline's distill job can start from here)
        with self.db.session() as s:
            moved = service.transition(s, self.job_id, "running", "exporting")
        if not moved:
            raise Cancelled()
        ckpt_id = self._register_checkpoint(self.run_dir / "final")
        if kind == "teacher":
            with self.db.session() as s:
                released = service.release_children(s, self.celery, self.settings, s.get(Job, self.job_id), ckpt_id)
            if released:
                self.log.info("released dependent jobs %s with checkpoint artifact %d", released, ckpt_id)

        # 3. export
        out = self.run_dir / "export"
        rejected = self.run_dir / "export.rejected"
        for d in (out, rejected):
            shutil.rmtree(d, ignore_errors=True)
        cmd = launch.export_command(self.run_dir / "final", out, config["data"].get("val"), self.settings.export_args)
        self.log.info("exporting: %s", " ".join(cmd))
        start = (self.run_dir / "output.log").stat().st_size if (self.run_dir / "output.log").exists() else 0
        rc = self._supervise(cmd, launch.child_env(self.settings.worker_gpus[:1], 1))
        if rc == 0:
            self._register_export(out)
            self._finish("succeeded", from_states="exporting")
            self.log.info("succeeded")
            return "succeeded"
        err = self._export_error(start)
        if rc == EXPORT_GATE_FAILED:
            if (rejected / "report.json").exists():
                self._register(rejected / "report.json", "report", "report", {"rejected": True})
            reason = f"export parity gate failed: {err or 'see the report artifact'}"
        else:
            reason = f"export failed (exit {rc}): {err or self._last_lines()}"
        self.log.warning(reason)
        self._finish("failed", from_states="exporting", error=reason)
        return "failed"

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
        return config

    def _supervise(self, cmd: list[str], env: dict[str, str], tail: RunProgress | None = None) -> int:
        """Run ``cmd``; stream metrics into the DB; stop it if a cancel is requested."""
        proc = launch.start(cmd, self.run_dir / "output.log", env, cwd=Path.cwd())
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == self.job_id).values(pid=proc.pid))
        reader = MetricsTail(self.run_dir / "metrics.jsonl") if tail is not None else None
        while True:
            rc = proc.poll()
            if reader is not None:
                self._apply(reader, tail)
            if rc is not None:
                return rc
            with self.db.session() as s:
                cancel = s.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))
            if cancel:
                self.log.info("cancel requested; stopping process group %d", proc.pid)
                launch.stop(proc, self.settings.cancel_grace_s, self.log)
                raise Cancelled()
            if self.stopping.is_set():
                self.log.info("worker shutting down; stopping process group %d", proc.pid)
                launch.stop(proc, self.settings.cancel_grace_s, self.log)
                raise WorkerStopping()
            time.sleep(self.settings.poll_s)

    def _carry_over_checkpoint(self, config: dict[str, Any]) -> bool:
        """A later attempt (a retry, or a run requeued when its worker stopped) continues from the
        newest earlier attempt's ``last.pt`` when that attempt ran the same config, instead of
        throwing away hours of training. Returns whether the run should ``--resume``."""
        for earlier in range(self.attempt - 1, 0, -1):
            prev = self.settings.runs_path / str(self.job_id) / f"attempt-{earlier}"
            last = prev / "checkpoints" / "last.pt"
            try:
                same = json.loads((prev / "job.json").read_text()) == config
            except (OSError, ValueError):
                continue
            if last.is_file() and same:
                dest = self.run_dir / "checkpoints"
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(last, dest / "last.pt.part")
                os.replace(dest / "last.pt.part", dest / "last.pt")
                self.log.info("resuming from attempt %d's checkpoint %s", earlier, last)
                return True
        return False

    def _requeue(self) -> str:
        """The worker is stopping mid-run: put the job back in the queue as a new attempt, so the
        next worker (or this one after a restart) runs it, resuming from the last checkpoint;
        nothing is left half-supervised."""
        with self.db.session() as s:
            moved = service.transition(s, self.job_id, ("running", "exporting"), "queued", attempt=self.attempt + 1,
                                       progress={}, metrics={}, started_at=None, worker=None, pid=None,
                                       run_dir=None, error=None)
            if moved:
                service.enqueue(s, self.celery, self.settings, self.job_id)
        self.log.warning("worker stopped during the run; %s", "re-queued as a new attempt" if moved else "state changed")
        return "requeued"

    def _apply(self, reader: MetricsTail, tail: RunProgress) -> None:
        events = reader.read_new()
        if not events:
            return
        points = tail.apply(events)
        with self.db.session() as s:
            if points:
                s.execute(insert(MetricPoint), [{"job_id": self.job_id, "attempt": self.attempt, **p} for p in points])
            s.execute(update(Job).where(Job.id == self.job_id).values(
                progress=dict(tail.progress), metrics=dict(tail.metrics), updated_at=utcnow()))

    def _last_lines(self, n: int = 5) -> str:
        path = self.run_dir / "output.log"
        if not path.exists():
            return ""
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip() and not ln.startswith("$ ")]
        return " | ".join(lines[-n:])

    def _export_error(self, start: int) -> str:
        """The exporter's last ``error: ...`` line (it prints its reason that way on stderr)."""
        with open(self.run_dir / "output.log", "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()
        errors = [ln.split("error:", 1)[1].strip() for ln in lines if "error:" in ln]
        return errors[-1] if errors else ""

    def _finish(self, state: str, from_states=("running", "exporting"), error: str | None = None) -> None:
        with self.db.session() as s:
            values: dict[str, Any] = {"pid": None}
            if error is not None:
                values["error"] = error[:4000]
            if state == "succeeded":
                job = s.get(Job, self.job_id)
                values["progress"] = {**(job.progress or {}), "fraction": 1.0, "eta_s": 0}
            if not service.transition(s, self.job_id, from_states, state, **values):
                self.log.warning("could not move to %s (state changed meanwhile)", state)

    def _fail_children(self, reason: str, state: str = "failed") -> None:
        with self.db.session() as s:
            job = s.get(Job, self.job_id)
            failed = service.fail_children(s, job, reason, state)
        if failed:
            self.log.info("failed dependent jobs %s", failed)

    def _register(self, src: Path, kind: str, fmt: str, meta: dict[str, Any] | None = None,
                  name: str | None = None) -> int:
        dest = self.settings.artifacts_path / str(self.job_id) / f"attempt-{self.attempt}" / (name or src.name)
        link_or_copy(src, dest)
        with self.db.session() as s:
            art = Artifact(job_id=self.job_id, kind=kind, format=fmt, path=str(dest), size=dest.stat().st_size,
                           sha256=sha256_file(dest), meta=meta or {})
            s.add(art)
            s.flush()
            art_id = art.id
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
        report: dict[str, Any] = {}
        try:
            report = json.loads((out / "report.json").read_text())
        except (OSError, ValueError):
            pass
        for filename, (kind, fmt) in EXPORT_FILES.items():
            if (out / filename).exists():
                meta = {}
                if fmt == "report" and isinstance(report, dict):
                    meta = {k: report[k] for k in ("gate", "parity_gate", "passed") if k in report}
                self._register(out / filename, kind, fmt, meta)


def register(app: Celery) -> None:
    """Define the tasks on ``app`` (called by ``make_celery``; keeps imports side-effect free)."""
    databases: dict[str, Database] = {}

    def database(settings: Settings) -> Database:
        if settings.database_url not in databases:
            databases[settings.database_url] = Database(settings.database_url)
        return databases[settings.database_url]

    stopping = threading.Event()

    def _on_shutdown(sender=None, **_kw) -> None:
        stopping.set()

    # Celery's warm shutdown (SIGTERM) only sets a flag and waits for the task; the supervisor
    # watches this event to stop its run and re-queue the job instead of blocking for hours.
    worker_shutting_down.connect(_on_shutdown, weak=False)

    @app.task(name=service.RUN_TASK, bind=True, ignore_result=True)
    def run_job(self, job_id: int) -> str:
        settings: Settings = self.app.distillery_settings
        return JobRunner(self.app, settings, database(settings), int(job_id), stopping).run()

    app.distillery_database = database


def recover_orphans(settings: Settings, database: Database, hostname: str) -> list[int]:
    """A worker starting on ``hostname`` fails the jobs a dead worker there left running (the
    early-ack price, see ``worker.celery_app``); they can be retried. Live workers are left alone."""
    failed = []
    with database.session() as s:
        rows = s.execute(select(Job.id, Job.worker).where(Job.state.in_(("running", "exporting")))).all()
    for job_id, worker in rows:
        host, _, pid = (worker or "").partition(":")
        if host == hostname and pid.isdigit() and not psutil.pid_exists(int(pid)):
            with database.session() as s:
                if service.transition(s, job_id, ("running", "exporting"), "failed",
                                      error="the worker stopped while the job was running; retry it"):
                    failed.append(job_id)
    return failed
