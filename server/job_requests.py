"""A ``POST /jobs`` body, from JSON to the job specs to create: the one path a submission takes.

The body goes through :mod:`server.submissions` once (the plain job, a teacher_job pipeline, a
sweep, a baseline twin); a body with ``teacher_outputs`` or ``students`` has those checked first
by :mod:`server.cache_pipeline` and its specs expanded by it afterwards. Kept apart so neither of
those modules calls the other back (they used to import each other).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from sqlalchemy.orm import Session

from . import cache_pipeline, submissions
from .job_spec import JobSpec
from .models import User
from .settings import Settings
from .vocabulary import SWEEP


def validate_request(db: Session, settings: Settings, user: User, body: Mapping[str, Any]) -> list[JobSpec]:
    """The jobs to create for ``body`` (teacher first in a pipeline), all at the body's priority
    (:func:`server.submissions.check_priority`). Raises ``SubmissionError`` naming the field; writes nothing."""
    priority = submissions.check_priority(user, body)
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
