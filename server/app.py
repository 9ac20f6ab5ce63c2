"""Flask application factory."""
from __future__ import annotations

import importlib.util
import logging

from flask import Flask

from . import api, extensions
from .settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, check_schema: bool = True) -> Flask:
    """Build the API (and the dashboard, when installed).

    Args:
        settings: deployment settings; ``Settings.from_env()`` when omitted.
        check_schema: refuse to start unless the database is migrated (``distillery db upgrade``).
    Raises:
        server.migrate.SchemaNotReady: the database is empty or behind; the message says what to run.
    """
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        # The hard cap for any body (uploads included); JSON bodies get the smaller
        # max_json_bytes check in api.base.json_body.
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.extensions["distillery.settings"] = settings
    extensions.init_db(app, settings, check_schema=check_schema)
    extensions.init_celery(app, settings)
    api.init_app(app)
    if importlib.util.find_spec("server.dashboard") is not None:
        from server.dashboard import bp as dashboard_bp

        app.register_blueprint(dashboard_bp, url_prefix="/")
    return app
