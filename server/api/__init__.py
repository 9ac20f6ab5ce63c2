"""The REST API: every URL of ``/api/v1`` (and ``/metrics``) is bound here, in one place."""
from __future__ import annotations

from flask import Blueprint, Flask, request
from werkzeug.exceptions import HTTPException

from . import artifacts, datasets, health, jobs, openapi
from .base import ApiError

PREFIX = "/api/v1"

ROUTES = [
    # (rule, view, methods)
    ("/jobs", jobs.create_job, ["POST"]),
    ("/jobs", jobs.list_jobs, ["GET"]),
    ("/jobs/<int:job_id>", jobs.get_job, ["GET"]),
    ("/jobs/<int:job_id>/metrics", jobs.get_job_metrics, ["GET"]),
    ("/jobs/<int:job_id>/logs", jobs.get_job_logs, ["GET"]),
    ("/jobs/<int:job_id>/cancel", jobs.cancel_job, ["POST"]),
    ("/jobs/<int:job_id>/retry", jobs.retry_job, ["POST"]),
    ("/artifacts", artifacts.list_artifacts, ["GET"]),
    ("/artifacts/<int:artifact_id>", artifacts.get_artifact, ["GET"]),
    ("/artifacts/<int:artifact_id>/download", artifacts.download_artifact, ["GET"]),
    ("/datasets", datasets.create_dataset, ["POST"]),
    ("/datasets", datasets.list_datasets, ["GET"]),
    ("/datasets/<int:dataset_id>", datasets.get_dataset, ["GET"]),
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
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}.get(e.code, "error")
    field = "body" if e.code in (400, 413) else None
    return ApiError(e.code or 500, code, e.description or str(e), field).response()


def init_app(app: Flask) -> None:
    app.register_blueprint(build_blueprint())
    ops = Blueprint("ops", __name__)
    ops.add_url_rule("/metrics", endpoint="metrics", view_func=health.metrics, methods=["GET"])
    app.register_blueprint(ops)
    app.register_error_handler(ApiError, lambda e: e.response())
    app.register_error_handler(HTTPException, _http_error)
