"""Per-user caps an admin sets: how many jobs one user may have queued or running at once.

``users.max_jobs_in_flight`` is null for most users: they get the deployment's
``DISTILLERY_MAX_JOBS_IN_FLIGHT``. An admin sets a user's own cap (lower for a noisy script,
higher for a team's sweep account) with ``PUT /api/v1/users/NAME/limits`` or
``distillery user limit NAME --max-jobs-in-flight N``; both go through :func:`set_limits`, and
``server.submissions.check_in_flight`` enforces :func:`job_cap` (429 naming the limit).

The cap holds under concurrency: counting and inserting happen in ONE transaction under a lock on
the user (:func:`reserve`, called by ``server.lifecycle.create_jobs``), so twenty simultaneous
submissions at a cap of 2 create exactly two. The early ``check_in_flight`` during validation is
only a quick answer; the locked count is the one that decides.

What counts: every queued, running or exporting job of the user except a sweep itself. A sweep runs
no process; its children (its teacher_outputs job, its trials) count, one each, and
``worker.sweep`` starts a trial only when the user has a free slot, so a sweep waits for a slot
instead of passing the cap. A sweep is admitted (:func:`slots_needed`) only while one slot is free.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .job_spec import JobSpec
from .models import Job, User
from .settings import Settings
from .vocabulary import ACTIVE_STATES, SWEEP

LIMIT_KEYS = ("max_jobs_in_flight",)
MAX_CAP = 100_000


class LimitError(ValueError):
    """A limits body the server refuses (answered 400 naming ``field``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class QuotaExceeded(Exception):
    """A submission that would pass the user's cap: answered 429 ``too_many_jobs`` naming ``kind``."""

    status, code, field = 429, "too_many_jobs", "kind"

    def __init__(self, active: int, adding: int, cap: int, source: str):
        self.message = (f"{active} of your jobs are queued or running and this would add {adding}; "
                        f"at most {cap} may be in flight ({source}): wait or cancel some")
        super().__init__(self.message)


def job_cap(settings: Settings, user: User) -> tuple[int, str]:
    """(the user's cap on queued + running jobs, where it comes from, for messages)."""
    if user.max_jobs_in_flight is not None:
        return user.max_jobs_in_flight, f"your limit, set by an admin (max_jobs_in_flight={user.max_jobs_in_flight})"
    cap = settings.max_jobs_in_flight
    return cap, f"this server's limit per user (DISTILLERY_MAX_JOBS_IN_FLIGHT={cap})"


def in_flight(db: Session, user: User) -> int:
    """The user's jobs that hold a slot: queued, running or exporting, a sweep itself excepted."""
    return db.scalar(select(func.count()).select_from(Job).where(Job.owner_id == user.id, Job.kind != SWEEP,
                                                                 Job.state.in_(ACTIVE_STATES)))


def slots_needed(specs: Iterable[JobSpec]) -> int:
    """Free slots a submission of ``specs`` needs: one per job, a sweep none of its own (its trials
    take theirs as they start), but a submission always needs at least one free."""
    return max(1, sum(1 for spec in specs if spec.kind != SWEEP))


def check(db: Session, settings: Settings, user: User, adding: int) -> None:
    """Raise :class:`QuotaExceeded` if ``adding`` more jobs would pass the user's cap (no lock:
    :func:`reserve` is the check that holds under concurrency)."""
    active, (cap, source) = in_flight(db, user), job_cap(settings, user)
    if active + adding > cap:
        raise QuotaExceeded(active, adding, cap, source)


def lock_user(db: Session, user: User) -> None:
    """Take a lock on ``user`` held until the transaction ends, so one submission of theirs at a
    time counts and inserts. PostgreSQL: ``SELECT ... FOR UPDATE`` on the user's row (each later
    statement of a READ COMMITTED transaction sees what the previous holder committed). SQLite: a
    no-op write to the row, which takes the database's write lock before the count, as BEGIN
    IMMEDIATE would: the driver opens a transaction only at its first write, so this write either
    starts the transaction or comes after one that already holds the lock; no stale read comes first."""
    if db.get_bind().dialect.name == "sqlite":
        db.execute(update(User).where(User.id == user.id).values(max_jobs_in_flight=User.max_jobs_in_flight)
                   .execution_options(synchronize_session=False))
    else:
        db.execute(select(User.id).where(User.id == user.id).with_for_update())


def reserve(db: Session, settings: Settings, user: User, adding: int) -> None:
    """Lock the user (:func:`lock_user`) and check that ``adding`` more jobs fit under their cap;
    the caller inserts them in the same transaction (its commit releases the lock)."""
    lock_user(db, user)
    check(db, settings, user, adding)


def free_slots(db: Session, settings: Settings, user: User) -> int:
    """Lock the user and return how many more jobs they may have in flight now (0 or more); the
    caller inserts at most that many in the same transaction, or ends it to release the lock."""
    lock_user(db, user)
    return max(0, job_cap(settings, user)[0] - in_flight(db, user))


def limits_of(db: Session, settings: Settings, user: User) -> dict[str, Any]:
    """The user's limits as the API and the CLI show them: the cap set for them (null: the
    deployment's), the cap in force and how many of their jobs count against it now."""
    cap, _ = job_cap(settings, user)
    return {"user": user.name, "max_jobs_in_flight": user.max_jobs_in_flight, "effective_max_jobs_in_flight": cap,
            "default_max_jobs_in_flight": settings.max_jobs_in_flight, "jobs_in_flight": in_flight(db, user)}


def parse_cap(value: Any, field: str = "max_jobs_in_flight") -> int | None:
    """A cap from a request or the command line: an integer 0..MAX_CAP, or null for the default."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise LimitError(field, f"must be an integer from 0 to {MAX_CAP}, or null for the server's default; got {value!r}")
    if not 0 <= value <= MAX_CAP:
        raise LimitError(field, f"must be from 0 to {MAX_CAP}, or null for the server's default; got {value}")
    return value


def set_limits(db: Session, user: User, body: Mapping[str, Any]) -> User:
    """Apply a limits body (``{"max_jobs_in_flight": N | null}``) to ``user``; unknown keys are refused.
    Jobs already queued or running are not touched: the cap applies to the next submission."""
    for key in body:
        if key not in LIMIT_KEYS:
            raise LimitError(key, f"unknown limit; allowed: {', '.join(LIMIT_KEYS)}")
    if "max_jobs_in_flight" not in body:
        raise LimitError("max_jobs_in_flight", "is required (an integer, or null for the server's default)")
    user.max_jobs_in_flight = parse_cap(body["max_jobs_in_flight"])
    db.commit()
    return user
