"""The dashboard: server-rendered page shells under ``/`` whose data comes from the REST API.

The pages are thin Jinja templates; small vanilla scripts in ``static/`` fetch ``/api/v1`` and draw
tables, progress bars and SVG charts, so the dashboard needs no build step and no CDN, and shows
exactly what API clients see. ``create_app`` registers ``bp`` at ``/``.
"""
from flask import Blueprint

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/dashboard/static")

from server.dashboard import views  # noqa: E402,F401  (binds the routes to bp)
