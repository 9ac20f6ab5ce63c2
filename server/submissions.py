"""Validation of a ``POST /jobs`` body: the engine's schema, server paths and artifact references.

Nothing here writes: :func:`validate_submission` returns the :class:`~server.job_spec.JobSpec` list
that :func:`server.lifecycle.create_jobs` inserts, so a refused submission leaves nothing behind.
The checks a config goes through (:func:`parse_job_config`, :func:`resolve_paths`, :func:`job_name`,
:func:`check_in_flight`) are also what :mod:`server.cache_pipeline` builds its extra students with;
:mod:`server.job_requests` calls this module once per submission and never the other way round.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from deit_core.config import ConfigError, ConfigErrors, TeacherConfig, did_you_mean, parse_config, whole_number

from . import quotas
from .checkpoint_match import CheckpointMismatch, check_classes, fill_from_checkpoints
from .job_spec import JobSpec, ParentRef
from .models import Artifact, Dataset, Job, User
from .settings import Settings
from .storage import PathRefused, check_links, check_safe_path, is_private, is_under, resolve_server_dir
from .sweeps import SWEEP_BODY_KEYS, SweepError, validate_sweep
from .vocabulary import DEFAULT_PRIORITY, DISTILL, JOB_KINDS, MAX_ID, MAX_SEEDS, PRIORITIES, SWEEP, TEACHER

log = logging.getLogger(__name__)

JOB_BODY_KEYS = {"kind", "name", "config", "teacher_job", "baseline", "seeds", "priority", "teacher_outputs", "students",
                 "preset", *SWEEP_BODY_KEYS}  # preset: server.job_requests.with_preset takes it out first
TEACHER_JOB_KEYS = {"name", "config"}


# Like storage.FOLDER_REFUSED: one answer, without the path, for every checkpoint path the caller may
# not name, existing or not (only one they may name can be "path does not exist").
CHECKPOINT_REFUSED = "is not a checkpoint you can use: name one of your checkpoint artifacts by id (or 'timm')"


class SubmissionError(ValueError):
    """A job submission is invalid; ``field`` is the dotted path in the request body."""

    def __init__(self, field: str, message: str, status: int = 400, code: str = "invalid_config",
                 errors: list[dict[str, str]] | None = None):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status, self.code = field, message, status, code
        self.errors = errors  # every problem as [{field, message}] when there were several checks (a config)

    @classmethod
    def from_config(cls, e: ConfigError, prefix: str) -> "SubmissionError":
        """The engine's error(s), field names prefixed by their place in the body (``config.``)."""
        every = e.errors if isinstance(e, ConfigErrors) else [e]
        return cls(f"{prefix}{e.field}", e.message, errors=[{"field": f"{prefix}{x.field}", "message": x.message} for x in every])

    @classmethod
    def merged(cls, errors: list["SubmissionError"]) -> "SubmissionError":
        """Several checks' errors as one (the first one's status, code, field and message)."""
        every = [x for e in errors for x in (e.errors or [{"field": e.field, "message": e.message}])]
        return cls(errors[0].field, errors[0].message, errors[0].status, errors[0].code, errors=every)


# ---------------------------------------------------------------------------------------------
# Validation of a submission
# ---------------------------------------------------------------------------------------------
def _datasets_of(db: Session, user: User) -> list[Dataset]:
    q = select(Dataset)
    if not user.is_admin:
        q = q.where(Dataset.owner_id == user.id)
    return list(db.scalars(q))


class Scope:
    """What one user may name by server path.

    The configured data roots are shared with every user (the deployment offers them). Storage holds
    every user's uploads, runs and artifacts, so inside it a path must fall in one of the caller's
    datasets (or, for a checkpoint, be one of the caller's checkpoint artifacts); admins may name
    anything under the roots. The service's own state (secret key, broker, SQLite file) never.
    """

    def __init__(self, db: Session, settings: Settings, user: User):
        self.settings, self.user = settings, user
        self.datasets = tuple(Path(d.path).resolve() for d in _datasets_of(db, user))
        self.roots = settings.allowed_data_roots + self.datasets
        self._db = db

    def may_read(self, p: Path) -> bool:
        if not is_under(p, self.roots) or is_private(p, self.settings.private_paths):
            return False
        if self.user.is_admin or not is_under(p, (self.settings.storage_path,)):
            return True
        return is_under(p, self.datasets)

    def may_load_checkpoint(self, p: Path) -> bool:
        if self.may_read(p):
            return True
        if not is_under(p, (self.settings.storage_path,)) or is_private(p, self.settings.private_paths):
            return False
        q = (select(Artifact.id).join(Job, Artifact.job_id == Job.id)
             .where(Artifact.path == str(p), Artifact.format == "checkpoint"))
        if not self.user.is_admin:
            q = q.where(Job.owner_id == self.user.id)
        return self._db.scalar(q.limit(1)) is not None

    def folder(self, raw: str, roots: tuple[Path, ...] | None = None) -> Path:
        """An existing folder the caller may read (and, given ``roots``, under one of them), with no
        symlink below it escaping that. A folder they may not name is refused with the one
        :data:`~server.storage.FOLDER_REFUSED` whether it exists or not."""
        p = resolve_server_dir(raw, lambda q: self.may_read(q) and is_under(q, roots or self.roots))
        check_links(p, self.may_read)
        return p


def resolve_data_path(db: Session, settings: Settings, user: User, raw: str, field: str, scope: Scope | None = None) -> str:
    """A data folder: ``dataset:NAME/train`` or a server path inside one of the caller's datasets or
    a shared data root (see :class:`Scope`). Returns the resolved absolute path. Errors name what the
    caller sent, never the server's own folders."""
    scope = scope or Scope(db, settings, user)
    try:
        if raw.startswith("dataset:"):
            name, _, sub = raw[len("dataset:"):].partition("/")
            ds = next((d for d in _datasets_of(db, user) if d.name == name), None)
            if ds is None:
                raise SubmissionError(field, f"no dataset named {name!r}; register it with `distillery datasets upload "
                                      f"PATH --name {name}` (or POST /api/v1/datasets); `distillery datasets list` shows yours")
            check_safe_path(sub or ".")
            try:
                return str(scope.folder(str(Path(ds.path) / sub), (Path(ds.path).resolve(),)))
            except PathRefused:
                raise PathRefused(f"{raw}: no such folder in dataset {name!r} (need train/ and val/)") from None
        return str(scope.folder(raw))
    except PathRefused as e:
        raise SubmissionError(field, str(e)) from None


def resolve_checkpoint_ref(db: Session, settings: Settings, user: User, value: Any, field: str,
                           scope: Scope | None = None) -> Any:
    """Check a ``teacher.checkpoint`` / ``student.init``: artifact id, 'timm', null or a server path."""
    if value is None or value == "timm":
        return value
    if isinstance(value, int):
        art = db.get(Artifact, value) if 0 < value <= MAX_ID else None
        if art is None or art.format != "checkpoint" or not (user.is_admin or art.job.owner_id == user.id):
            raise SubmissionError(field, f"no checkpoint artifact with id {value}")
        return value
    scope = scope or Scope(db, settings, user)
    try:
        check_safe_path(value)
        p = Path(value).resolve()
        if not scope.may_load_checkpoint(p):
            raise PathRefused(CHECKPOINT_REFUSED)
        if not p.exists():
            raise PathRefused(f"path does not exist: {value}")
    except PathRefused as e:
        raise SubmissionError(field, str(e)) from None
    return str(p)


def check_limits(settings: Settings, cfg: dict[str, Any], prefix: str) -> None:
    """Caps by what the deployment offers (DISTILLERY_MAX_*), beyond the engine's own ranges."""
    for section, key, cap, setting in (("resources", "processes", settings.max_processes, "MAX_PROCESSES"),
                                       ("data", "img_size", settings.max_img_size, "MAX_IMG_SIZE"),
                                       ("train", "epochs", settings.max_epochs, "MAX_EPOCHS"),
                                       ("train", "batch_size", settings.max_batch_size, "MAX_BATCH_SIZE")):
        value = (cfg.get(section) or {}).get(key)
        if isinstance(value, int) and value > cap:
            raise SubmissionError(f"{prefix}{section}.{key}", f"must be <= {cap} on this server "
                                  f"(DISTILLERY_{setting}), got {value}")
    nodes = (cfg.get("resources") or {}).get("nodes", 1)
    if isinstance(nodes, int) and nodes > settings.max_nodes:
        raise SubmissionError(f"{prefix}resources.nodes", f"got {nodes}, but this deployment places at most "
                              f"{settings.max_nodes} node(s) per job (DISTILLERY_MAX_NODES); a multi-node job needs "
                              "the Slurm launcher (DISTILLERY_LAUNCHER=slurm)")


def check_in_flight(db: Session, settings: Settings, user: User, adding: int) -> None:
    """429 when ``adding`` more jobs would pass the user's cap on queued/running jobs (the one an
    admin set for them, else the deployment's; see ``server.quotas``). An early answer, before the
    paths are checked; ``server.lifecycle.create_jobs`` counts again under the user's lock."""
    try:
        quotas.check(db, settings, user, adding)
    except quotas.QuotaExceeded as e:
        raise SubmissionError(e.field, e.message, status=e.status, code=e.code) from None


def check_priority(user: User, body: Mapping[str, Any]) -> str:
    """The body's ``priority`` (low, normal, high; default normal). Only admins may ask for high:
    it puts the job ahead of everyone else's (403 naming ``priority``)."""
    priority = body.get("priority", DEFAULT_PRIORITY)
    if priority not in PRIORITIES:
        raise SubmissionError("priority", f"must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    if priority == PRIORITIES[-1] and not user.is_admin:
        raise SubmissionError("priority", f"only admins may submit {priority!r} priority jobs; use "
                              f"{', '.join(PRIORITIES[:-1])}", status=403, code="forbidden")
    return priority


def parse_job_config(raw: Any, prefix: str, kind: str | None, placeholder_teacher: bool,
                     db: Session | None = None, user: User | None = None) -> dict[str, Any]:
    """parse_config (the engine's schema) with field names prefixed by their place in the body; what
    the caller left out that a checkpoint artifact's own config says (model, image size, data) is
    filled from it first, and what contradicts it is refused (see :mod:`server.checkpoint_match`)."""
    if not isinstance(raw, Mapping):
        raise SubmissionError(prefix.rstrip("."), "must be a JSON object")
    raw = copy.deepcopy(dict(raw))
    if db is not None and user is not None:
        try:
            raw = fill_from_checkpoints(db, user, raw, kind or raw.get("kind"))
        except CheckpointMismatch as e:
            raise SubmissionError(f"{prefix}{e.field}", e.message) from None
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
        raise SubmissionError.from_config(e, prefix) from None
    if placeholder_teacher:
        cfg["teacher"]["checkpoint"] = None
    return cfg


def resolve_paths(db: Session, settings: Settings, user: User, cfg: dict[str, Any], prefix: str) -> dict[str, Any]:
    check_limits(settings, cfg, prefix)
    scope = Scope(db, settings, user)
    cfg["data"]["train"] = resolve_data_path(db, settings, user, cfg["data"]["train"], f"{prefix}data.train", scope)
    cfg["data"]["val"] = resolve_data_path(db, settings, user, cfg["data"]["val"], f"{prefix}data.val", scope)
    cfg["teacher"]["checkpoint"] = resolve_checkpoint_ref(
        db, settings, user, cfg["teacher"]["checkpoint"], f"{prefix}teacher.checkpoint", scope)
    if cfg.get("student"):
        init = cfg["student"].get("init")
        if init not in (None, "timm"):
            cfg["student"]["init"] = resolve_checkpoint_ref(db, settings, user, init, f"{prefix}student.init", scope)
    try:
        check_classes(db, cfg)
    except CheckpointMismatch as e:
        raise SubmissionError(f"{prefix}{e.field}", e.message) from None
    check_cache_name(db, user, cfg, prefix)
    return cfg


def check_cache_name(db: Session, user: User, cfg: dict[str, Any], prefix: str) -> None:
    """``distillation.teacher_cache``: auto, off, or the name of a teacher-output cache artifact the
    caller may read (the worker resolves it to its folder when the job starts)."""
    name = (cfg.get("distillation") or {}).get("teacher_cache", "auto")
    if name in ("auto", "off"):
        return
    q = (select(Artifact.id).join(Job, Artifact.job_id == Job.id)
         .where(Artifact.format == "teacher_outputs", Artifact.name == name))
    if not user.is_admin:
        q = q.where(Job.owner_id == user.id)
    if db.scalar(q.limit(1)) is None:
        raise SubmissionError(f"{prefix}distillation.teacher_cache", f"no teacher-output cache named {name!r}; use 'auto', "
                              "'off' or the name of a cache artifact (GET /api/v1/artifacts?format=teacher_outputs)")


def job_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise SubmissionError(field, "must be a non-empty string of at most 200 characters")
    return value.strip()


def kind_and_name(body: Mapping[str, Any]) -> tuple[str, str]:
    """The first checks of any body: a known ``kind``, a ``name``, a ``config``."""
    kind = body.get("kind")
    failed = []
    if kind not in JOB_KINDS:
        failed.append(SubmissionError("kind", f"must be one of {', '.join(JOB_KINDS)}, got {kind!r}"
                                      + did_you_mean(kind, JOB_KINDS)))
    try:
        name = job_name(body.get("name"), "name")
    except SubmissionError as e:
        failed.append(e)
    if "config" not in body:
        failed.append(SubmissionError("config", "is required"))
    if failed:
        raise SubmissionError.merged(failed)
    return kind, name


def validate_submission(db: Session, settings: Settings, user: User, body: Mapping[str, Any]) -> list[JobSpec]:
    """Check a ``POST /jobs`` body without ``teacher_outputs``/``students`` (those are
    :mod:`server.cache_pipeline`'s, see :func:`server.job_requests.validate_request`); return the jobs
    to create, teacher first for a pipeline, a baseline twin last. Nothing is written."""
    kind, name = kind_and_name(body)
    if kind == SWEEP:
        return [sweep_spec(db, settings, user, body, name)]
    for key in sorted({"teacher_outputs", "students"} & body.keys()):
        raise SubmissionError(key, "is expanded by server.cache_pipeline; submit through server.job_requests")
    refuse_sweep_keys(body)
    seeds = check_seeds(body, kind)
    teacher_spec = body.get("teacher_job")
    check_in_flight(db, settings, user, (0 if teacher_spec is None else 1) + seeds * (1 + (body.get("baseline") is True)))
    if teacher_spec is None:
        cfg = resolve_paths(db, settings, user, parse_job_config(body["config"], "config.", kind, placeholder_teacher=False,
                                                        db=db, user=user), "config.")
        teacher_ref = cfg["teacher"]["checkpoint"] if kind == DISTILL else None
        spec = JobSpec(kind, name, cfg, parent=checkpoint_parent(db, teacher_ref))
        specs = [spec, *baseline_spec(body, kind, name, cfg, 0)]
    else:
        specs = teacher_job_specs(db, settings, user, body, kind, name, teacher_spec)
    return replicate_specs(specs, seeds)


def check_seeds(body: Mapping[str, Any], kind: str) -> int:
    """``seeds: N`` (1 to :data:`MAX_SEEDS`, default 1): train the student and its baseline with N
    seeds, so the gain's interval covers training noise too. Only with ``baseline: true`` (400 naming ``seeds``)."""
    raw = body.get("seeds", 1)
    seeds = whole_number(raw)
    if seeds is None or not 1 <= seeds <= MAX_SEEDS:
        raise SubmissionError("seeds", f"must be an integer from 1 to {MAX_SEEDS}, got {raw!r}")
    if seeds > 1 and (kind != DISTILL or body.get("baseline") is not True):
        raise SubmissionError("seeds", "only a distill job with baseline: true takes seeds (the seeds measure "
                              "the gain over the baseline); add baseline: true or leave seeds out")
    return seeds


def replicate_specs(specs: list[JobSpec], seeds: int) -> list[JobSpec]:
    """``seeds: N``: after the submission's own specs (seed 0: the primary distill job and its
    baseline), N - 1 more pairs, each a copy of the primary and its baseline with ``train.seed`` +k,
    the student ``replicate_of`` the primary, the baseline ``baseline_of`` its own seed's student.
    A pipeline's replicates wait for the same teacher job as the primary (its ``parent``)."""
    if seeds == 1:
        return specs
    out = list(specs)
    primary = next(s.baseline_of for s in specs if s.baseline_of is not None)
    out[primary] = replace(specs[primary], seeds=seeds)
    twin = next(s for s in specs if s.baseline_of == primary)
    for k in range(1, seeds):
        student, baseline = (copy.deepcopy(specs[primary].config), copy.deepcopy(twin.config))
        for cfg in (student, baseline):
            cfg["train"]["seed"] = int(cfg["train"]["seed"]) + k
        suffix = f"-seed{k}"
        out.append(replace(specs[primary], name=f"{specs[primary].name[:190]}{suffix}", config=student, replicate_of=primary))
        out.append(replace(twin, name=f"{specs[primary].name[:181]}{suffix}-baseline", config=baseline,
                           baseline_of=len(out) - 1))
    return out


def teacher_job_specs(db: Session, settings: Settings, user: User, body: Mapping[str, Any], kind: str, name: str,
                      teacher_spec: Any) -> list[JobSpec]:
    """A pipeline: train the teacher, then distill from its checkpoint."""
    if kind != DISTILL:
        raise SubmissionError("teacher_job", "only a distill job can name a teacher_job")
    if not isinstance(teacher_spec, Mapping):
        raise SubmissionError("teacher_job", "must be a JSON object {name, config}")
    for key in teacher_spec:
        if key not in TEACHER_JOB_KEYS:
            raise SubmissionError(f"teacher_job.{key}", "unknown key; allowed keys: config, name")
    t_name = job_name(teacher_spec.get("name", f"{name}-teacher"), "teacher_job.name")
    if "config" not in teacher_spec:
        raise SubmissionError("teacher_job.config", "is required")
    failed: list[SubmissionError] = []  # both configs are checked, so one 400 lists the problems of both
    try:
        t_cfg = parse_job_config(teacher_spec["config"], "teacher_job.config.", TEACHER, placeholder_teacher=False,
                                 db=db, user=user)
    except SubmissionError as e:
        failed.append(e)
        t_cfg = {"teacher": {"model": TeacherConfig().model}}
    d_raw = body["config"]
    if isinstance(d_raw, Mapping):
        teacher_raw = d_raw.get("teacher") or {}
        if isinstance(teacher_raw, Mapping):
            if teacher_raw.get("checkpoint") is not None:
                raise SubmissionError("config.teacher.checkpoint",
                                      "must be null or absent when teacher_job is given (it is the teacher's checkpoint)")
            d_raw = {**d_raw, "teacher": {**teacher_raw, "model": teacher_raw.get("model", t_cfg["teacher"]["model"])}}
    try:
        d_cfg = parse_job_config(d_raw, "config.", DISTILL, placeholder_teacher=True, db=db, user=user)
    except SubmissionError as e:
        failed.append(e)
    if failed:
        raise SubmissionError.merged(failed)
    if d_cfg["teacher"]["model"] != t_cfg["teacher"]["model"]:
        raise SubmissionError("config.teacher.model",
                              f"must be the teacher job's model {t_cfg['teacher']['model']!r}, got {d_cfg['teacher']['model']!r}")
    t_cfg = resolve_paths(db, settings, user, t_cfg, "teacher_job.config.")
    d_cfg = resolve_paths(db, settings, user, d_cfg, "config.")
    return [JobSpec(TEACHER, t_name, t_cfg), JobSpec(DISTILL, name, d_cfg, parent=ParentRef.earlier(0)),
            *baseline_spec(body, kind, name, d_cfg, 1)]


def checkpoint_parent(db: Session, ref: Any) -> ParentRef | None:
    """Lineage: the job whose checkpoint artifact (by id) teaches this one; None for a path or timm."""
    return ParentRef.existing(db.get(Artifact, ref).job_id) if isinstance(ref, int) else None


def refuse_sweep_keys(body: Mapping[str, Any]) -> None:
    for key in sorted(SWEEP_BODY_KEYS & set(body)):
        raise SubmissionError(key, "only a sweep (kind: sweep) takes this key")


def sweep_spec(db: Session, settings: Settings, user: User, body: Mapping[str, Any], name: str) -> JobSpec:
    """``kind: sweep``: ``config`` is the base distill config of every trial; the search space,
    trials, parallel, pruner and seed are checked by :func:`server.sweeps.validate_sweep`."""
    for key in ("teacher_job", "baseline", "seeds"):
        if key in body:
            raise SubmissionError(key, "a sweep takes no " + key)
    check_in_flight(db, settings, user, 1)
    base = resolve_paths(db, settings, user, parse_job_config(body["config"], "config.", DISTILL, placeholder_teacher=False,
                                                     db=db, user=user), "config.")
    try:
        cfg = validate_sweep(body, base, settings.sweep_max_trials, lambda c: check_limits(settings, c, "config."))
    except SweepError as e:
        raise SubmissionError(e.field, e.message) from None
    return JobSpec(SWEEP, name, cfg)


def baseline_spec(body: Mapping[str, Any], kind: str, name: str, cfg: dict[str, Any], index: int) -> list[JobSpec]:
    """``baseline: true``: the same student, seed and budget trained without a teacher, so the distill
    job's page can say what the teacher was worth. Returned as a spec linked to the job at ``index``."""
    wanted = body.get("baseline", False)
    if not isinstance(wanted, bool):
        raise SubmissionError("baseline", f"must be true or false, got {wanted!r}")
    if not wanted:
        return []
    if kind != DISTILL or cfg["distillation"]["type"] == "none":
        raise SubmissionError("baseline", "only a distill job with a teacher (distillation.type hard or soft) has a baseline")
    b_cfg = copy.deepcopy(cfg)
    b_cfg["distillation"]["type"] = "none"
    b_cfg["teacher"]["checkpoint"] = None
    return [JobSpec(DISTILL, f"{name[:190]}-baseline", b_cfg, baseline_of=index)]
