"""Job life cycle shared by the API and the worker: validation, compare-and-set, queueing, pipelines.

State only moves through :func:`transition`, an ``UPDATE ... WHERE id = :id AND state IN (...)``:
whoever changes the row first wins, so a Celery message delivered twice, a cancel racing a start,
or two workers racing each other can never run a job twice or resurrect a finished one.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from deit_core.config import ConfigError, parse_config

from .models import ACTIVE_STATES, Artifact, Dataset, Job, User, utcnow
from .settings import Settings
from .storage import PathRefused, check_safe_path, is_under, resolve_server_dir

log = logging.getLogger(__name__)

RUN_TASK = "distillery.run_job"
JOB_BODY_KEYS = {"kind", "name", "config", "teacher_job"}
TEACHER_JOB_KEYS = {"name", "config"}


class SubmissionError(ValueError):
    """A job submission is invalid; ``field`` is the dotted path in the request body."""

    def __init__(self, field: str, message: str, status: int = 400, code: str = "invalid_config"):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status, self.code = field, message, status, code


# ---------------------------------------------------------------------------------------------
# Compare-and-set
# ---------------------------------------------------------------------------------------------
def transition(db: Session, job_id: int, from_states: str | Iterable[str], to_state: str, **values: Any) -> bool:
    """Move job ``job_id`` to ``to_state`` only if it is in one of ``from_states``; commit.

    Returns:
        True if this caller made the change (exactly one caller can win).
    """
    states = (from_states,) if isinstance(from_states, str) else tuple(from_states)
    values = {"state": to_state, "updated_at": utcnow(), **values}
    if to_state in ("succeeded", "failed", "cancelled") and "finished_at" not in values:
        values["finished_at"] = utcnow()
    res = db.execute(update(Job).where(Job.id == job_id, Job.state.in_(states)).values(**values)
                     .execution_options(synchronize_session=False))
    db.commit()
    return res.rowcount == 1


# ---------------------------------------------------------------------------------------------
# Validation of a submission
# ---------------------------------------------------------------------------------------------
def _datasets_of(db: Session, user: User) -> list[Dataset]:
    q = select(Dataset)
    if not user.is_admin:
        q = q.where(Dataset.owner_id == user.id)
    return list(db.scalars(q))


def resolve_data_path(db: Session, settings: Settings, user: User, raw: str, field: str) -> str:
    """A data folder: ``dataset:NAME/train`` or a server path inside a registered dataset or an
    allowed root. Returns the resolved absolute path."""
    try:
        if raw.startswith("dataset:"):
            name, _, sub = raw[len("dataset:"):].partition("/")
            ds = next((d for d in _datasets_of(db, user) if d.name == name), None)
            if ds is None:
                raise SubmissionError(field, f"no dataset named {name!r}; register it with POST /api/v1/datasets")
            check_safe_path(sub or ".")
            return str(resolve_server_dir(str(Path(ds.path) / sub), (Path(ds.path),)))
        roots = settings.allowed_data_roots + tuple(Path(d.path) for d in _datasets_of(db, user))
        return str(resolve_server_dir(raw, roots))
    except PathRefused as e:
        raise SubmissionError(field, str(e)) from None


def resolve_checkpoint_ref(db: Session, settings: Settings, user: User, value: Any, field: str) -> Any:
    """Check a ``teacher.checkpoint`` / ``student.init``: artifact id, 'timm', null or a server path."""
    if value is None or value == "timm":
        return value
    if isinstance(value, int):
        art = db.get(Artifact, value)
        if art is None or art.format != "checkpoint" or not (user.is_admin or art.job.owner_id == user.id):
            raise SubmissionError(field, f"no checkpoint artifact with id {value}")
        return value
    try:
        check_safe_path(value)
        p = Path(value).resolve()
        if not is_under(p, settings.allowed_data_roots):
            raise PathRefused(f"{value} is outside the allowed roots")
        if not p.exists():
            raise PathRefused(f"path does not exist: {value}")
    except PathRefused as e:
        raise SubmissionError(field, str(e)) from None
    return str(p)


def _parse(raw: Any, prefix: str, kind: str | None, placeholder_teacher: bool) -> dict[str, Any]:
    """parse_config (the engine's schema) with field names prefixed by their place in the body."""
    if not isinstance(raw, Mapping):
        raise SubmissionError(prefix.rstrip("."), "must be a JSON object")
    raw = copy.deepcopy(dict(raw))
    if kind is not None:
        if "kind" in raw and raw["kind"] != kind:
            raise SubmissionError(f"{prefix}kind", f"must match the job kind {kind!r}, got {raw['kind']!r}")
        raw["kind"] = kind
    check = raw
    if placeholder_teacher:  # pipeline: the teacher checkpoint is filled in when the teacher finishes
        check = copy.deepcopy(raw)
        check.setdefault("teacher", {})
        if isinstance(check["teacher"], Mapping):
            check["teacher"] = {**check["teacher"], "checkpoint": "timm"}
    try:
        cfg = parse_config(check, check_paths=False).to_dict()
    except ConfigError as e:
        raise SubmissionError(f"{prefix}{e.field}", e.message) from None
    if placeholder_teacher:
        cfg["teacher"]["checkpoint"] = None
    return cfg


def _resolve_paths(db: Session, settings: Settings, user: User, cfg: dict[str, Any], prefix: str) -> dict[str, Any]:
    cfg["data"]["train"] = resolve_data_path(db, settings, user, cfg["data"]["train"], f"{prefix}data.train")
    cfg["data"]["val"] = resolve_data_path(db, settings, user, cfg["data"]["val"], f"{prefix}data.val")
    cfg["teacher"]["checkpoint"] = resolve_checkpoint_ref(
        db, settings, user, cfg["teacher"]["checkpoint"], f"{prefix}teacher.checkpoint")
    if cfg.get("student"):
        init = cfg["student"].get("init")
        if init not in (None, "timm"):
            cfg["student"]["init"] = resolve_checkpoint_ref(db, settings, user, init, f"{prefix}student.init")
    return cfg


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise SubmissionError(field, "must be a non-empty string of at most 200 characters")
    return value.strip()


def validate_submission(db: Session, settings: Settings, user: User, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Check a ``POST /jobs`` body; return the jobs to create, teacher first for a pipeline.

    Each returned item is ``{"kind", "name", "config", "after_previous"}``. Nothing is written.
    """
    kind = body.get("kind")
    if kind not in ("teacher", "distill"):
        raise SubmissionError("kind", f"must be 'teacher' or 'distill', got {kind!r}")
    name = _name(body.get("name"), "name")
    if "config" not in body:
        raise SubmissionError("config", "is required")
    teacher_spec = body.get("teacher_job")
    if teacher_spec is None:
        cfg = _resolve_paths(db, settings, user, _parse(body["config"], "config.", kind, placeholder_teacher=False), "config.")
        spec = {"kind": kind, "name": name, "after_previous": False, "config": cfg}
        teacher_ref = cfg["teacher"]["checkpoint"] if kind == "distill" else None
        if isinstance(teacher_ref, int):  # lineage: the job whose checkpoint teaches this one
            spec["parent_id"] = db.get(Artifact, teacher_ref).job_id
        return [spec]

    # A pipeline: train the teacher, then distill from its checkpoint.
    if kind != "distill":
        raise SubmissionError("teacher_job", "only a distill job can name a teacher_job")
    if not isinstance(teacher_spec, Mapping):
        raise SubmissionError("teacher_job", "must be a JSON object {name, config}")
    for key in teacher_spec:
        if key not in TEACHER_JOB_KEYS:
            raise SubmissionError(f"teacher_job.{key}", "unknown key; allowed keys: config, name")
    t_name = _name(teacher_spec.get("name", f"{name}-teacher"), "teacher_job.name")
    if "config" not in teacher_spec:
        raise SubmissionError("teacher_job.config", "is required")
    t_cfg = _parse(teacher_spec["config"], "teacher_job.config.", "teacher", placeholder_teacher=False)
    d_raw = body["config"]
    if isinstance(d_raw, Mapping):
        teacher_raw = d_raw.get("teacher") or {}
        if isinstance(teacher_raw, Mapping):
            if teacher_raw.get("checkpoint") is not None:
                raise SubmissionError("config.teacher.checkpoint",
                                      "must be null or absent when teacher_job is given (it is the teacher's checkpoint)")
            d_raw = {**d_raw, "teacher": {**teacher_raw, "model": teacher_raw.get("model", t_cfg["teacher"]["model"])}}
    d_cfg = _parse(d_raw, "config.", "distill", placeholder_teacher=True)
    if d_cfg["teacher"]["model"] != t_cfg["teacher"]["model"]:
        raise SubmissionError("config.teacher.model",
                              f"must be the teacher job's model {t_cfg['teacher']['model']!r}, got {d_cfg['teacher']['model']!r}")
    t_cfg = _resolve_paths(db, settings, user, t_cfg, "teacher_job.config.")
    d_cfg = _resolve_paths(db, settings, user, d_cfg, "config.")
    return [{"kind": "teacher", "name": t_name, "config": t_cfg, "after_previous": False},
            {"kind": "distill", "name": name, "config": d_cfg, "after_previous": True}]


def create_jobs(db: Session, user: User, specs: list[dict[str, Any]]) -> list[Job]:
    """Insert validated specs (one transaction); a dependent job gets the previous one as parent."""
    jobs: list[Job] = []
    for spec in specs:
        job = Job(kind=spec["kind"], name=spec["name"], config=spec["config"], owner_id=user.id,
                  state="queued", attempt=1, progress={}, metrics={})
        if spec["after_previous"]:
            job.parent_id = jobs[-1].id
        elif spec.get("parent_id") is not None:
            job.parent_id = spec["parent_id"]
        db.add(job)
        db.flush()
        jobs.append(job)
    db.commit()
    return jobs


def ready_to_run(job: Job) -> bool:
    """A pipeline's distill job waits (queued, no message) until its teacher checkpoint exists."""
    return not (job.parent_id is not None and job.config.get("teacher", {}).get("checkpoint") is None)


# ---------------------------------------------------------------------------------------------
# Queueing
# ---------------------------------------------------------------------------------------------
def enqueue(db: Session, celery, settings: Settings, job_id: int) -> str:
    """Send the run message for ``job_id`` and remember its task id (for revoke on cancel)."""
    result = celery.send_task(RUN_TASK, args=[job_id], queue=settings.queue)
    db.execute(update(Job).where(Job.id == job_id).values(task_id=result.id))
    db.commit()
    log.info("job %s queued as task %s on %s", job_id, result.id, settings.queue)
    return result.id


def release_children(db: Session, celery, settings: Settings, parent: Job, checkpoint_artifact_id: int) -> list[int]:
    """Give waiting distill jobs their teacher's checkpoint artifact and queue them."""
    released = []
    for child in list(db.scalars(select(Job).where(Job.parent_id == parent.id, Job.state == "queued"))):
        cfg = copy.deepcopy(child.config)
        if cfg.get("teacher", {}).get("checkpoint") is not None:
            continue
        cfg["teacher"]["checkpoint"] = checkpoint_artifact_id
        child.config = cfg
        db.commit()
        enqueue(db, celery, settings, child.id)
        released.append(child.id)
    return released


def fail_children(db: Session, parent: Job, reason: str, state: str = "failed") -> list[int]:
    """A teacher that ends without a checkpoint fails (or, if it was cancelled, cancels) the jobs
    waiting on it, saying why."""
    failed = []
    for child in list(db.scalars(select(Job).where(Job.parent_id == parent.id, Job.state.in_(ACTIVE_STATES)))):
        if child.config.get("teacher", {}).get("checkpoint") is None:
            if transition(db, child.id, "queued", state, error=f"teacher job {parent.id} {reason}"):
                failed.append(child.id)
    return failed
