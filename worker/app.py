"""The worker's Celery app: the shared configuration (``server.queue``) plus the registered tasks.

Only the worker builds this; the API sends by task name from the plain app and never imports it.
"""
from __future__ import annotations

from celery import Celery

from server.queue import make_celery
from server.settings import Settings

from . import tasks


def make_worker_app(settings: Settings) -> Celery:
    app = make_celery(settings)
    tasks.register(app)
    return app
