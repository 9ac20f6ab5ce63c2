"""The job's stored config as the typed :class:`deit_core.config.JobConfig`, with what only the
service can resolve turned into paths: checkpoint artifact ids into their folders, a
teacher-output cache's name into its folder. The engine then only ever sees paths.

The worker reads config values (resources, the validation folder, the teacher checkpoint) from
this typed object, never from raw dict keys; what it writes for the engine (``job.json``) is the
resolved config's ``to_dict()``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from deit_core.config import JobConfig, parse_config
from server.models import Artifact

from .teacher_cache import resolve_name


def stored_config(raw: dict[str, Any]) -> JobConfig:
    """The job row's config, typed (validated at submission; paths are the service's to check)."""
    return parse_config(raw, check_paths=False)


def resolved_config(s: Session, config: JobConfig) -> JobConfig:
    """``config`` with artifact ids and cache names replaced by folders (raises ValueError naming
    the field when the artifact is gone)."""
    teacher = dataclasses.replace(config.teacher,
                                  checkpoint=_checkpoint_folder(s, "teacher.checkpoint", config.teacher.checkpoint))
    student = config.student
    if student is not None:
        student = dataclasses.replace(student, init=_checkpoint_folder(s, "student.init", student.init))
    return resolve_name(s, dataclasses.replace(config, teacher=teacher, student=student))


def _checkpoint_folder(s: Session, field: str, value: Any) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        return value
    art = s.get(Artifact, value)
    if art is None or art.format != "checkpoint":
        raise ValueError(f"{field}: checkpoint artifact {value} no longer exists")
    return str(Path(art.path).parent)
