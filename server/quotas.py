"""Per-user caps an admin sets: how many jobs one user may have queued or running at once.

``users.max_jobs_in_flight`` is null for most users: they get the deployment's
``DISTILLERY_MAX_JOBS_IN_FLIGHT``. An admin sets a user's own cap (lower for a noisy script,
higher for a team's sweep account) with ``PUT /api/v1/users/NAME/limits`` or
``distillery user limit NAME --max-jobs-in-flight N``; both go through :func:`set_limits`, and
``server.submissions.check_in_flight`` enforces :func:`job_cap` (429 naming the limit).
"""
from __future__ import annotations

from typing import Any, Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Job, User
from .settings import Settings
from .vocabulary import ACTIVE_STATES

LIMIT_KEYS = ("max_jobs_in_flight",)
MAX_CAP = 100_000


class LimitError(ValueError):
    """A limits body the server refuses (answered 400 naming ``field``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def job_cap(settings: Settings, user: User) -> tuple[int, str]:
    """(the user's cap on queued + running jobs, where it comes from, for messages)."""
    if user.max_jobs_in_flight is not None:
        return user.max_jobs_in_flight, f"your limit, set by an admin (max_jobs_in_flight={user.max_jobs_in_flight})"
    cap = settings.max_jobs_in_flight
    return cap, f"this server's limit per user (DISTILLERY_MAX_JOBS_IN_FLIGHT={cap})"


def in_flight(db: Session, user: User) -> int:
    return db.scalar(select(func.count()).select_from(Job).where(Job.owner_id == user.id, Job.state.in_(ACTIVE_STATES)))


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
