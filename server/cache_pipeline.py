"""One teacher, many students: the ``teacher_outputs`` and ``students`` keys of ``POST /jobs``.

    {"kind": "distill", "name": "tiny-hard", "config": {...},          # the first student
     "teacher_job": {"config": {...}},                                  # optional: train the teacher first
     "teacher_outputs": {"name": "digits-cache"},                       # optional: fill the cache once
     "students": [{"name": "tiny-soft", "config": {...}}, ...]}          # more students (1 to 16)

With ``teacher_outputs`` the jobs are teacher -> teacher_outputs -> every student: the
teacher_outputs job's config is the first student's without the student (same data, teacher,
augmentation, batch, seed, processes; epochs = the most any student asks for; it stores logits if
any student is soft), and each student waits for it, then starts with the teacher checkpoint and
``distillation.teacher_cache`` = the cache's name. So every student must have the cache's key
fields (deit_core.teacher_cache.key.CONFIG_KEY_FIELDS) equal to the first student's: a 400 names the first
field that differs. Without ``teacher_outputs``, ``students`` are just more students of the same
teacher job (or of their own checkpoints).

The jobs are created in the order teacher, teacher_outputs, the extra students, the first student
(the response is that one; ``pipeline`` lists every id in that order).

:mod:`server.job_requests` drives it: :func:`pipeline_keys` checks these keys first, the rest of
the body is validated once by :func:`server.submissions.validate_submission`, then
:func:`expand` turns those specs into the pipeline. This module uses the submission checks but
never calls the validation back.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Mapping

from sqlalchemy.orm import Session

from deit_core.config import ConfigError, parse_config
from deit_core.teacher_cache.codecs import AUTO, accepts, resolved_store
from deit_core.teacher_cache.key import CONFIG_KEY_FIELDS, config_key_values

from . import submissions as sub
from .job_spec import JobSpec, ParentRef
from .models import User
from .settings import Settings
from .vocabulary import DISTILL, TEACHER, TEACHER_OUTPUTS

MAX_STUDENTS = 16
STUDENT_KEYS = {"name", "config"}
TEACHER_OUTPUTS_KEYS = {"name"}
PIPELINE_KEYS = ("teacher_outputs", "students")


@dataclass(frozen=True)
class PipelineKeys:
    """The checked ``students`` and ``teacher_outputs`` of a body, and the name of the job asked for."""

    name: str
    students: list[Mapping[str, Any]]
    teacher_outputs: Mapping[str, Any] | None


def _students(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = body.get("students", [])
    if not isinstance(raw, list) or len(raw) > MAX_STUDENTS:
        raise sub.SubmissionError("students", f"must be a list of at most {MAX_STUDENTS} objects {{name, config}}")
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise sub.SubmissionError(f"students.{i}", "must be a JSON object {name, config}")
        for key in item:
            if key not in STUDENT_KEYS:
                raise sub.SubmissionError(f"students.{i}.{key}", "unknown key; allowed keys: config, name")
        if "config" not in item:
            raise sub.SubmissionError(f"students.{i}.config", "is required")
    return raw


def _teacher_outputs(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = body.get("teacher_outputs")
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise sub.SubmissionError("teacher_outputs", "must be a JSON object {name} (or absent)")
    for key in spec:
        if key not in TEACHER_OUTPUTS_KEYS:
            raise sub.SubmissionError(f"teacher_outputs.{key}", "unknown key; allowed keys: name")
    return spec


def _student_config(db: Session, settings: Settings, user: User, raw: Any, prefix: str, teacher_model: str,
                    waits: bool) -> dict[str, Any]:
    """Parse one extra student like the first: in a pipeline its checkpoint is filled in later."""
    if waits and isinstance(raw, Mapping):
        teacher_raw = raw.get("teacher") or {}
        if isinstance(teacher_raw, Mapping):
            if teacher_raw.get("checkpoint") is not None:
                raise sub.SubmissionError(f"{prefix}teacher.checkpoint", "must be null or absent in a pipeline "
                                          "(the teacher job's checkpoint is filled in)")
            raw = {**raw, "teacher": {**teacher_raw, "model": teacher_raw.get("model", teacher_model)}}
    cfg = sub.parse_job_config(raw, prefix, DISTILL, placeholder_teacher=waits, db=db, user=user)
    return sub.resolve_paths(db, settings, user, cfg, prefix)


def _check_shares_cache(first: dict[str, Any], cfg: dict[str, Any], prefix: str, store: dict[str, Any]) -> None:
    """A student of a teacher_outputs job must have the cache's key fields and read its stored form."""
    ours, theirs = config_key_values(first), config_key_values(cfg)
    for field in CONFIG_KEY_FIELDS:
        if field != "teacher.checkpoint" and ours[field] != theirs[field]:
            raise sub.SubmissionError(f"{prefix}{field}", f"must equal config.{field} ({ours[field]!r}): the students "
                                      f"of one teacher_outputs job share its cache, got {theirs[field]!r}")
    dist = cfg["distillation"]
    if dist["type"] == "none":
        raise sub.SubmissionError(f"{prefix}distillation.type", "a student of a teacher_outputs job distills (hard or soft)")
    if dist["teacher_cache"] != AUTO:
        raise sub.SubmissionError(f"{prefix}distillation.teacher_cache",
                                  "must be auto (or absent): the pipeline fills in the teacher_outputs job's cache")
    why = accepts(dist, store)
    if why:
        raise sub.SubmissionError(f"{prefix}distillation.teacher_cache_store", f"cannot read the pipeline's cache: {why}")


def _outputs_config(students: list[dict[str, Any]]) -> dict[str, Any]:
    """The teacher_outputs job's config: the first student's, minus the student, covering every student."""
    first = students[-1]
    cfg = {k: copy.deepcopy(first[k]) for k in ("data", "teacher", "train", "resources")}
    cfg["kind"] = TEACHER_OUTPUTS
    cfg["train"]["epochs"] = max(s["train"]["epochs"] for s in students)
    soft = any(s["distillation"]["type"] == "soft" for s in students)
    cfg["distillation"] = {"type": "soft" if soft else "hard", "teacher_cache": AUTO,
                           "teacher_cache_store": first["distillation"]["teacher_cache_store"],
                           "teacher_cache_topk": first["distillation"]["teacher_cache_topk"]}
    check = copy.deepcopy(cfg)
    if check["teacher"]["checkpoint"] is None:
        check["teacher"]["checkpoint"] = "timm"  # filled in when the teacher job finishes
    try:
        return {**parse_config(check, check_paths=False).to_dict(), "teacher": cfg["teacher"]}
    except ConfigError as e:
        raise sub.SubmissionError(f"config.{e.field}", f"{e.message} (in the teacher_outputs job derived from config)") from None


def pipeline_keys(db: Session, settings: Settings, user: User, body: Mapping[str, Any], kind: str,
                  name: str) -> PipelineKeys:
    """Check ``teacher_outputs`` and ``students`` and the user's in-flight cap for every job of the
    pipeline, before the rest of the body is validated."""
    if kind != DISTILL:
        raise sub.SubmissionError("students" if "students" in body else "teacher_outputs", "only a distill job takes this key")
    extra, to_spec = _students(body), _teacher_outputs(body)
    sub.check_in_flight(db, settings, user, 1 + len(extra) + ("teacher_job" in body) + (to_spec is not None)
                        + (body.get("baseline") is True))
    return PipelineKeys(name, extra, to_spec)


def expand(db: Session, settings: Settings, user: User, keys: PipelineKeys, base: list[JobSpec]) -> list[JobSpec]:
    """The pipeline's specs (see the module doc) from ``base``, the validated rest of the body: its
    teacher job (if any), the first student and its baseline twin (if any)."""
    teacher = next((s for s in base if s.kind == TEACHER), None)
    first = next(s for s in base if s.kind == DISTILL and s.baseline_of is None)
    baseline = next((s for s in base if s.baseline_of is not None), None)
    to_spec, name = keys.teacher_outputs, keys.name
    waits = teacher is not None or to_spec is not None
    model = first.config["teacher"]["model"]
    configs = [_student_config(db, settings, user, item["config"], f"students.{i}.config.", model, waits)
               for i, item in enumerate(keys.students)]
    names = [sub.job_name(item.get("name", f"{name[:180]}-{i + 2}"), f"students.{i}.name")
             for i, item in enumerate(keys.students)]

    specs: list[JobSpec] = [teacher] if teacher is not None else []
    parent = ParentRef.earlier(0) if teacher is not None else None
    if to_spec is not None:
        if first.config["distillation"]["teacher_cache"] != AUTO:
            raise sub.SubmissionError("config.distillation.teacher_cache",
                                      "must be auto (or absent) with teacher_outputs: the pipeline fills in its cache")
        out_cfg = _outputs_config([*configs, first.config])
        stored = {"store": resolved_store(out_cfg["distillation"]), "topk": out_cfg["distillation"]["teacher_cache_topk"]}
        for i, cfg in enumerate(configs):
            _check_shares_cache(first.config, cfg, f"students.{i}.config.", stored)
        _check_shares_cache(first.config, first.config, "config.", stored)
        out_name = sub.job_name(to_spec.get("name", f"{name[:180]}-teacher-outputs"), "teacher_outputs.name")
        # lineage without a teacher job: the job whose checkpoint it runs
        specs.append(JobSpec(TEACHER_OUTPUTS, out_name, out_cfg,
                             parent=parent or sub.checkpoint_parent(db, out_cfg["teacher"]["checkpoint"])))
        parent = ParentRef.earlier(len(specs) - 1)
        for cfg in (*configs, first.config):  # they start with the checkpoint and the cache, when it exists
            cfg["teacher"]["checkpoint"] = None
    for student_name, cfg in zip(names, configs):
        lineage = parent or sub.checkpoint_parent(db, cfg["teacher"]["checkpoint"])
        specs.append(JobSpec(DISTILL, student_name, cfg, parent=lineage))
    specs.append(replace(first, parent=parent or first.parent))
    if baseline is not None:
        specs.append(replace(baseline, baseline_of=len(specs) - 1))
    return specs
