"""A ``POST /jobs`` body, from JSON to the job specs to create: the one path a submission takes.

The body goes through :mod:`server.submissions` once (the plain job, a teacher_job pipeline, a
sweep, a baseline twin); a body with ``teacher_outputs`` or ``students`` has those checked first
by :mod:`server.cache_pipeline` and its specs expanded by it afterwards. Kept apart so neither of
those modules calls the other back (they used to import each other). A body's ``preset``
(:mod:`deit_core.presets`) is put under its configs first, so everything after sees one config.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Mapping

from sqlalchemy.orm import Session

from deit_core.presets import UnknownPreset, apply_preset, get_preset

from . import cache_pipeline, submissions
from .checkpoint_match import CheckpointMismatch, fill_from_checkpoints
from .job_spec import JobSpec
from .models import User
from .settings import Settings
from .vocabulary import DISTILL, JOB_KINDS, SWEEP, TEACHER


def with_preset(db: Session, user: User, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """``body`` without ``preset``, its values put under ``config`` (a sweep's: a distill config),
    ``teacher_job.config`` and each ``students[].config``. Order of precedence: the user's own keys,
    then what a checkpoint artifact the config names says (model, image size, data: filled first, as
    :func:`server.submissions.parse_job_config` would), then the preset, so a preset never contradicts
    the teacher it distills from. An unknown preset is a 400 naming ``preset`` with the choices."""
    if "preset" not in body:
        return body
    name = body["preset"]
    out = {k: v for k, v in body.items() if k != "preset"}
    kind = body.get("kind") if body.get("kind") in JOB_KINDS and body.get("kind") != SWEEP else DISTILL

    def under(raw: Mapping[str, Any], k: str, field: str) -> dict[str, Any]:
        try:
            filled = fill_from_checkpoints(db, user, copy.deepcopy(dict(raw)), k)
        except CheckpointMismatch as e:
            raise submissions.SubmissionError(f"{field}.{e.field}", e.message) from None
        return apply_preset(name, filled, k)

    try:
        get_preset(name)
        if isinstance(out.get("config"), Mapping):
            out["config"] = under(out["config"], kind, "config")
        teacher = out.get("teacher_job")
        if isinstance(teacher, Mapping) and isinstance(teacher.get("config"), Mapping):
            out["teacher_job"] = {**teacher, "config": under(teacher["config"], TEACHER, "teacher_job.config")}
        if isinstance(out.get("students"), list):
            out["students"] = [{**s, "config": under(s["config"], DISTILL, f"students.{i}.config")}
                               if isinstance(s, Mapping) and isinstance(s.get("config"), Mapping) else s
                               for i, s in enumerate(out["students"])]
    except UnknownPreset as e:
        raise submissions.SubmissionError("preset", str(e)) from None
    return out


def validate_request(db: Session, settings: Settings, user: User, body: Mapping[str, Any]) -> list[JobSpec]:
    """The jobs to create for ``body`` (teacher first in a pipeline), all at the body's priority
    (:func:`server.submissions.check_priority`). Raises ``SubmissionError`` naming the field; writes nothing."""
    priority = submissions.check_priority(user, body)
    body = with_preset(db, user, body)
    kind, name = submissions.kind_and_name(body)
    keys = None
    if kind != SWEEP and set(cache_pipeline.PIPELINE_KEYS) & body.keys():
        if body.get("seeds", 1) != 1:  # the teacher-output cache's key holds the seed: one cache serves one seed
            raise submissions.SubmissionError("seeds", "cannot be combined with teacher_outputs or students (a "
                                              "teacher-output cache serves one seed); submit the seeds without them")
        keys = cache_pipeline.pipeline_keys(db, settings, user, body, kind, name)
        body = {k: v for k, v in body.items() if k not in cache_pipeline.PIPELINE_KEYS}
    specs = submissions.validate_submission(db, settings, user, body)
    if keys is not None:
        specs = cache_pipeline.expand(db, settings, user, keys, specs)
    return [replace(spec, priority=priority) for spec in specs]  # a pipeline's teacher and a baseline twin too
