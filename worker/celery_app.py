"""The Celery app, configured from :class:`server.settings.Settings` (no module-level app: nothing
connects at import time; ``distillery worker`` and the API each build one).

Long jobs: a training run can take hours or days, so

* ``task_acks_late = False`` (early ack): the message is acknowledged when the worker takes it.
  The broker therefore never redelivers it after a visibility timeout, however long the run —
  the Redis transport's classic "a task running longer than visibility_timeout runs twice"
  cannot happen. The durable record of the work is the job row, not the message.
* ``worker_prefetch_multiplier = 1`` and concurrency 1 per GPU group: a worker never holds
  messages it cannot start, so other workers get them.
* Exactly-once *execution* comes from the database: the task's first act is the compare-and-set
  ``queued -> running``; a duplicate delivery (or a retried publish) finds the job no longer
  queued and returns without doing anything.
* The price of early ack: if a worker machine dies mid-run, its job stays ``running``. A
  restarted worker marks jobs it owned as failed (``worker.tasks.recover_orphans``) and the user
  can ``POST /jobs/{id}/retry``; each attempt has its own run dir and
  continues from the previous attempt's last checkpoint (``JobRunner._carry_over_checkpoint``).
* ``visibility_timeout`` is still set to a week for Redis, for messages prefetched but not started.
"""
from __future__ import annotations

from celery import Celery

from server.settings import Settings


def make_celery(settings: Settings) -> Celery:
    app = Celery("distillery", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        broker_transport_options=settings.broker_transport_options(),
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue,
        task_create_missing_queues=True,
        task_acks_late=False,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_time_limit=None,
        enable_utc=True,
    )
    app.distillery_settings = settings  # read by the tasks; plain attribute, no global state
    from worker import tasks

    tasks.register(app)
    return app
