"""The dashboard: server-rendered page shells under ``/`` whose data comes from the REST API.

The pages are thin Jinja templates; small vanilla scripts in ``static/`` fetch ``/api/v1`` and draw
tables, progress bars and SVG charts, so the dashboard needs no build step and no CDN, and shows
exactly what API clients see. ``views`` binds the routes to ``bp`` and ``create_app`` registers it (imported
from ``views``) at ``/``; this package does not import ``views`` back, so the two are no import circle.
"""
from flask import Blueprint

from server.auth import csrf_token
from server.vocabulary import FINAL_STATES, JOB_STATES

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/dashboard/static")


@bp.app_context_processor
def _vocabulary() -> dict:
    """The job states for the templates (and, through ``<body data-final-states>``, the scripts), and the
    session's CSRF value (``<meta name="csrf-token">``, sent back by common.js as ``X-CSRF-Token``)."""
    return {"job_states": JOB_STATES, "final_states": FINAL_STATES, "csrf_token": csrf_token}
