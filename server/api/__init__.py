"""The REST API: every URL of ``/api/v1`` (and ``/metrics``) is bound here, in one place."""
from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, current_app, g, request
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.routing import IntegerConverter

from ..db import database_unavailable
from ..errors import ApiError
from ..lifecycle import JobConflict
from ..models import Dataset
from ..quotas import QuotaExceeded
from ..submissions import SubmissionError
from ..vocabulary import MAX_ID
from . import artifacts, datasets, health, jobs, openapi, presets, rate_limits, sweeps, tokens, users, webhooks
from .base import db, settings
from .redaction import dataset_folders, internal_folders, redact, rewriter

log = logging.getLogger(__name__)
PREFIX = "/api/v1"


class IdConverter(IntegerConverter):
    """``<id:name>``: a row id, 1..MAX_ID (beyond it no route matches: 404)."""

    def __init__(self, map, *args, **kwargs):
        super().__init__(map, min=1, max=MAX_ID)

ROUTES = [
    # (rule, view, methods)
    ("/jobs", jobs.create_job, ["POST"]),
    ("/jobs", jobs.list_jobs, ["GET"]),
    ("/jobs/<id:job_id>", jobs.get_job, ["GET"]),
    ("/jobs/<id:job_id>/metrics", jobs.get_job_metrics, ["GET"]),
    ("/jobs/<id:job_id>/logs", jobs.get_job_logs, ["GET"]),
    ("/jobs/<id:job_id>/cancel", jobs.cancel_job, ["POST"]),
    ("/jobs/<id:job_id>/retry", jobs.retry_job, ["POST"]),
    ("/jobs/<id:sweep_id>/trials", sweeps.get_trials, ["GET"]),
    ("/jobs/<id:sweep_id>/promote", sweeps.promote, ["POST"]),
    ("/artifacts", artifacts.list_artifacts, ["GET"]),
    ("/artifacts/<id:artifact_id>", artifacts.get_artifact, ["GET"]),
    ("/artifacts/<id:artifact_id>/download", artifacts.download_artifact, ["GET"]),
    ("/datasets", datasets.create_dataset, ["POST"]),
    ("/datasets", datasets.list_datasets, ["GET"]),
    ("/datasets/<id:dataset_id>", datasets.get_dataset, ["GET"]),
    ("/presets", presets.list_presets, ["GET"]),
    ("/warnings", presets.config_warnings, ["POST"]),
    ("/users/<name>/limits", users.get_limits, ["GET"]),
    ("/users/<name>/limits", users.put_limits, ["PUT"]),
    ("/tokens", tokens.list_tokens, ["GET"]),
    ("/tokens/<id:token_id>", tokens.revoke_token, ["DELETE"]),
    ("/webhooks", webhooks.create_webhook, ["POST"]),
    ("/webhooks", webhooks.list_webhooks, ["GET"]),
    ("/webhooks/<id:webhook_id>", webhooks.delete_webhook, ["DELETE"]),
    ("/webhooks/<id:webhook_id>/deliveries", webhooks.list_deliveries, ["GET"]),
    ("/health", health.health, ["GET"]),
    ("/openapi.json", openapi.openapi_json, ["GET"]),
]


def build_blueprint() -> Blueprint:
    bp = Blueprint("api", __name__, url_prefix=PREFIX)
    for rule, view, methods in ROUTES:
        bp.add_url_rule(rule, endpoint=f"{view.__module__.rsplit('.', 1)[-1]}_{view.__name__}",
                        view_func=view, methods=methods)
    return bp


def _http_error(e: HTTPException):
    """API paths answer errors as JSON; other paths (the dashboard) keep Flask's pages."""
    if not request.path.startswith(PREFIX):
        return e
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request",
            429: "too_many_requests"}.get(e.code, "error")
    field = "body" if e.code in (400, 413) else None
    resp = ApiError(e.code or 500, code, e.description or str(e), field).response()
    if e.code == 405 and getattr(e, "valid_methods", None):
        resp.headers["Allow"] = ", ".join(sorted(e.valid_methods))
    return resp


def _unexpected(e: Exception):
    """Anything unhandled: logged with its traceback, answered as the error body without details."""
    if isinstance(e, HTTPException):
        return _http_error(e)
    log.exception("unhandled error on %s %s", request.method, request.path)
    if not request.path.startswith(PREFIX):
        return InternalServerError()
    return ApiError(500, "internal_error", "internal error (logged on the server)").response()


def _database_error(e: Exception):
    """The database is down or restarting: 503 with a clear code (the pool reconnects by itself,
    ``pool_pre_ping``); any other database error stays a 500."""
    if not database_unavailable(e):
        return _unexpected(e)
    log.warning("database unavailable: %s", str(e).splitlines()[0][:200])
    return ApiError(503, "database_unavailable", "the database is unavailable; try again shortly").response()


def _hide_server_paths(response: Response) -> Response:
    """A JSON answer of the API to anyone but an admin, with server paths rewritten (``server.api.redaction``).
    A downloaded artifact (a file sent as it is, even a JSON one such as the export report) is never
    rewritten: its bytes must match its sha256."""
    user = g.get("user")
    if (not request.path.startswith(PREFIX) or response.is_streamed or response.direct_passthrough
            or "Content-Disposition" in response.headers or not response.is_json
            or (user is not None and user.is_admin)):
        return response
    mine = []
    if user is not None and response.status_code != 503:
        try:
            mine = db().execute(select(Dataset.name, Dataset.path).where(Dataset.owner_id == user.id)).all()
        except DBAPIError:  # the database went away mid-request: storage still reads <storage>, nothing leaks
            db().rollback()
    rewrite = rewriter(internal_folders(settings()) + dataset_folders(mine))
    response.set_data(current_app.json.dumps(redact(response.get_json(silent=True), rewrite)))
    return response


def init_app(app: Flask) -> None:
    app.url_map.converters["id"] = IdConverter
    app.register_blueprint(build_blueprint())
    ops = Blueprint("ops", __name__)
    ops.add_url_rule("/metrics", endpoint="metrics", view_func=health.metrics, methods=["GET"])
    app.register_blueprint(ops)
    app.after_request(_hide_server_paths)
    rate_limits.init_app(app, app.extensions["distillery.settings"])
    app.register_error_handler(ApiError, lambda e: e.response())
    app.register_error_handler(SubmissionError, lambda e: ApiError(e.status, e.code, e.message, e.field, e.errors).response())
    app.register_error_handler(QuotaExceeded, lambda e: ApiError(e.status, e.code, e.message, e.field).response())
    app.register_error_handler(JobConflict, lambda e: ApiError(409, "conflict", e.message, e.field).response())
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DBAPIError, _database_error)
    app.register_error_handler(Exception, _unexpected)
