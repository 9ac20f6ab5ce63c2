"""A job to create, as validation hands it to :func:`server.lifecycle.create_jobs`.

A submission may create several jobs at once (a pipeline's teacher, its teacher_outputs job, the
students, a baseline twin), and a job may depend on one that is created in the same submission
(whose id does not exist yet) or on one that exists already (a checkpoint artifact's job, a sweep).
So a spec names its parent ONE way, :class:`ParentRef`: either ``index`` (the spec at that position
in the same list; it must come earlier) or ``job_id`` (an existing job), never both. The baseline
twin relation (``baseline_of``) is a different link, the index of the distill spec it mirrors, and
so is a replicate's (``replicate_of``: the index of the seed-0 distill spec of a ``seeds: N`` submission).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .vocabulary import DEFAULT_PRIORITY


@dataclass(frozen=True)
class ParentRef:
    """The job a new job waits for or descends from: ``index`` into the same list of specs, or
    ``job_id`` of an existing job (exactly one is set)."""

    index: int | None = None
    job_id: int | None = None

    def __post_init__(self) -> None:
        if (self.index is None) == (self.job_id is None):
            raise ValueError("a ParentRef names either index or job_id")

    @classmethod
    def earlier(cls, index: int) -> ParentRef:
        return cls(index=index)

    @classmethod
    def existing(cls, job_id: int) -> ParentRef:
        return cls(job_id=job_id)


@dataclass
class JobSpec:
    """One validated job: ``config`` is the engine's parsed config with server paths resolved."""

    kind: str
    name: str
    config: dict[str, Any]
    parent: ParentRef | None = None
    baseline_of: int | None = None  # index of the distill spec (same list) this one trains without a teacher
    trial_number: int | None = None  # a sweep's trial (worker.sweep)
    priority: str = DEFAULT_PRIORITY
    replicate_of: int | None = None  # index of the primary distill spec (same list) whose seed k > 0 this one trains
    seeds: int = 1  # the primary of a ``seeds: N`` submission: N
