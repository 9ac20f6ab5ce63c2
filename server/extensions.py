"""Extensions bound to the app with ``init_app`` (Redash style): database and Celery client."""
from __future__ import annotations

from flask import Flask

from .db import Database
from .migrate import require_current_schema
from .queue import make_celery
from .settings import Settings


def init_db(app: Flask, settings: Settings, check_schema: bool = True) -> Database:
    """One engine per app; the scoped session is removed after every request."""
    database = Database(settings.database_url)
    if check_schema:
        require_current_schema(database.engine)
    app.extensions["distillery.db"] = database

    @app.teardown_appcontext
    def _remove_session(_exc=None) -> None:
        database.scoped.remove()

    return database


def init_celery(app: Flask, settings: Settings):
    """The API only sends messages (by task name); the Celery app has the worker's configuration
    but none of its tasks."""
    celery = make_celery(settings)
    app.extensions["distillery.celery"] = celery
    return celery
