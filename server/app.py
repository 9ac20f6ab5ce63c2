"""Flask application factory."""
from __future__ import annotations

import importlib.util
import logging
import math
import secrets
from datetime import timedelta

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SecureCookieSessionInterface

from . import api, extensions
from .settings import Settings

log = logging.getLogger(__name__)


def finite(value):
    """``value`` with every NaN/Infinity replaced by None: strict JSON parsers (and the dashboard)
    reject them, and a diverged run's metrics would otherwise make its job unreadable."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


class StrictJSONProvider(DefaultJSONProvider):
    """Responses are strict JSON: non-finite numbers become null, and json.dumps refuses any left."""

    sort_keys = False

    def dumps(self, obj, **kwargs):
        kwargs.setdefault("allow_nan", False)
        return super().dumps(finite(obj), **kwargs)


class SessionInterface(SecureCookieSessionInterface):
    """The session cookie is ``Secure`` on https requests (or always, with DISTILLERY_SECURE_COOKIES)."""

    def get_cookie_secure(self, app) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


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
    app.json = StrictJSONProvider(app)
    app.session_interface = SessionInterface()
    app.config.update(
        # `serve` and `worker` refuse a missing key before we get here; an app built without one (a
        # script, a test) gets a random per-process key rather than a guessable one.
        SECRET_KEY=settings.secret_key or secrets.token_hex(32),
        # The hard cap for any body (uploads included); JSON bodies get the smaller
        # max_json_bytes check in api.base.json_body.
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
    )
    app.extensions["distillery.settings"] = settings
    extensions.init_db(app, settings, check_schema=check_schema)
    extensions.init_celery(app, settings)
    api.init_app(app)
    if importlib.util.find_spec("server.dashboard") is not None:
        from server.dashboard.views import bp as dashboard_bp  # the blueprint with its routes bound

        app.register_blueprint(dashboard_bp, url_prefix="/")
    return app
