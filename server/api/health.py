"""Liveness (database and broker checks; no authentication) and Prometheus metrics (who may read them
is ``DISTILLERY_METRICS``: open, admin or off)."""
from __future__ import annotations

from flask import Response, jsonify
from sqlalchemy import func, select, text

from ..auth import current_user
from ..errors import ApiError
from ..models import Job
from ..vocabulary import JOB_KINDS, JOB_STATES
from .base import celery, db, settings


def _check_broker() -> str | None:
    try:
        with celery().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return None
    except Exception as e:  # report, don't raise: health must always answer
        return str(e) or type(e).__name__


def health():
    checks = {}
    try:
        db().execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:
        checks["database"] = f"error: {e}"
    err = _check_broker()
    checks["broker"] = "ok" if err is None else f"error: {err}"
    ok = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ok" if ok else "degraded", "checks": checks,
                    "queue": settings().queue}), (200 if ok else 503)


def _check_metrics_access() -> None:
    """``off``: 404 as if there were no such page; ``admin``: an admin's token (401 without a live one,
    403 for anyone else's); ``open``: anyone."""
    mode = settings().metrics
    if mode == "off":
        raise ApiError(404, "not_found", "metrics are off on this server (DISTILLERY_METRICS=off)")
    if mode == "admin":
        user = current_user()
        if user is None:
            raise ApiError(401, "unauthorized", "metrics need an admin's token: 'Authorization: Bearer TOKEN' "
                           "(DISTILLERY_METRICS=admin)", "Authorization")
        if not user.is_admin:
            raise ApiError(403, "forbidden", "metrics are for admins on this server (DISTILLERY_METRICS=admin)",
                           "Authorization")


def metrics():
    """Prometheus text: ``distillery_jobs{state="running"} 1`` for every state."""
    _check_metrics_access()
    counts = dict(db().execute(select(Job.state, func.count()).group_by(Job.state)).all())
    lines = ["# HELP distillery_jobs Jobs by state.", "# TYPE distillery_jobs gauge"]
    lines += [f'distillery_jobs{{state="{s}"}} {counts.get(s, 0)}' for s in JOB_STATES]
    kinds = dict(db().execute(select(Job.kind, func.count()).group_by(Job.kind)).all())
    lines += ["# HELP distillery_jobs_total Jobs by kind.", "# TYPE distillery_jobs_total gauge"]
    lines += [f'distillery_jobs_total{{kind="{k}"}} {kinds.get(k, 0)}' for k in JOB_KINDS]
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")
