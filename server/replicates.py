"""A replicate group: the runs whose gain one distill job's page reports, and whether they are done.

A distill job submitted with ``baseline: true`` is the *primary* of a group: its student (seed 0) and
baseline twin, plus, with ``seeds: N``, the students of seeds 1..N-1 (``replicate_of`` the primary)
and each one's own baseline twin (``baseline_of`` that student). The gain is computed once every run
of the group has ended (``worker.comparison``); until then the job JSON says what it waits for. Both
the worker and the serializer read the group from here, so they agree on who belongs to it.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Job
from .vocabulary import DISTILL, FINAL_STATES, SUCCEEDED


@dataclass(frozen=True)
class Pair:
    """One seed of a group: its student and its baseline twin (None: the twin was never created)."""

    index: int  # 0 for the primary, k for the k-th replicate
    student: Job
    baseline: Job | None

    @property
    def seed(self) -> int | None:
        """The student's ``train.seed`` (the baseline trains with the same one)."""
        seed = ((self.student.config or {}).get("train") or {}).get("seed")
        return seed if isinstance(seed, int) else None

    @property
    def runs(self) -> tuple[Job, ...]:
        return (self.student,) if self.baseline is None else (self.student, self.baseline)


def twin_of(db: Session, student_id: int) -> Job | None:
    """The newest baseline twin of a distill job (``baseline_of`` it), if any."""
    return db.scalar(select(Job).where(Job.baseline_of == student_id).order_by(Job.id.desc()).limit(1))


def primary_of(db: Session, job: Job) -> Job | None:
    """The primary of the group ``job`` belongs to (itself, its student's primary for a baseline, its
    ``replicate_of`` for a replicate), or None when ``job`` is in no group (no baseline twin)."""
    if job.kind != DISTILL:
        return None
    student = db.get(Job, job.baseline_of) if job.baseline_of is not None else job
    if student is None:
        return None
    primary = db.get(Job, student.replicate_of) if student.replicate_of is not None else student
    if primary is None or twin_of(db, primary.id) is None:
        return None
    return primary


def group(db: Session, primary: Job, relatives: "Relatives | None" = None) -> list[Pair]:
    """The group's pairs, seed 0 (the primary) first, then the replicates in creation order (from
    ``relatives`` when a list page loaded them for all its rows at once)."""
    if relatives is not None:
        students = [primary, *relatives.replicates.get(primary.id, [])]
        return [Pair(k, student, relatives.twins.get(student.id)) for k, student in enumerate(students)]
    students = [primary, *db.scalars(select(Job).where(Job.replicate_of == primary.id).order_by(Job.id))]
    return [Pair(k, student, twin_of(db, student.id)) for k, student in enumerate(students)]


@dataclass(frozen=True)
class Relatives:
    """The baseline twins and replicates of a page of jobs, loaded in two queries (:func:`relatives_of`)."""

    twins: dict[int, Job]  # student id -> its newest baseline twin
    replicates: dict[int, list[Job]]  # primary id -> its replicate students, in creation order


def relatives_of(db: Session, jobs: list[Job]) -> Relatives:
    """What :func:`group` and :func:`twin_of` would ask for each of ``jobs``, for all of them at once."""
    ids = [j.id for j in jobs if j.kind == DISTILL]
    replicates: dict[int, list[Job]] = {}
    twins: dict[int, Job] = {}
    if not ids:
        return Relatives(twins, replicates)
    for r in db.scalars(select(Job).where(Job.replicate_of.in_(ids)).order_by(Job.id)):
        replicates.setdefault(r.replicate_of, []).append(r)
    students = ids + [r.id for rs in replicates.values() for r in rs]
    for t in db.scalars(select(Job).where(Job.baseline_of.in_(students)).order_by(Job.id)):
        twins[t.baseline_of] = t  # ascending ids: the newest twin is the one left
    return Relatives(twins, replicates)


def pending_reason(pairs: list[Pair], expected_seeds: int) -> str | None:
    """Why the gain cannot be computed yet (or at all), or None when every run succeeded: runs still
    going ("waiting for 3 of 6 runs"), or the first that ended without succeeding ("baseline seed 2 failed")."""
    runs = [r for p in pairs for r in p.runs]
    expected = 2 * max(expected_seeds, len(pairs))
    missing = expected - len(runs)
    active = [r for r in runs if r.state not in FINAL_STATES]
    if active or missing:
        return f"waiting for {len(active) + missing} of {expected} runs"
    for p in pairs:
        for role, run in (("student", p.student), ("baseline", p.baseline)):
            if run is not None and run.state != SUCCEEDED:
                return f"{role} seed {p.index} {run.state} (job {run.id})"
    return None
