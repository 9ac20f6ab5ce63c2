"""The Celery configuration shared by the API (which only sends) and the worker (which also runs).

As in superset's ``tasks/celery_app.py``, the API never imports the worker: it builds a plain Celery
app from this config and sends the run message by task name (:data:`server.vocabulary.RUN_TASK`);
``worker.app`` builds the same app and registers the task under that name. No module-level app:
nothing connects at import time.

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
* The price of early ack: a taken message is gone, so the database decides who runs a job. A
  running attempt holds a lease its worker renews (``worker.lease``); the reconciler in every
  worker (``worker.reconciler``) restarts a job whose lease expired (its worker or host died) as a
  new attempt, up to ``max_attempts``, and re-sends the message of a queued job that was lost (a
  Redis restart). Each attempt has its own run dir and continues from the previous attempt's last
  checkpoint (``worker.runner.JobRunner``).
* ``visibility_timeout`` is still set to a week for Redis, for messages prefetched but not started.

Queues and priorities (``server.routing``): each run size has its queue, a worker consumes the
sizes it can give one run, and messages carry the job's priority; on Redis one list per priority
step, popped highest first (``priority_steps``, ``queue_order_strategy``). Prefetch: with early
ack and ``--pool solo`` (``distillery worker``'s default) a worker holds no message beyond the one
it runs (the task runs inside the consumer loop), so the next job it takes is chosen by priority
when it is free. With ``--pool threads --concurrency N`` it also reserves up to N more while its N
threads are busy (seen with Redis: 6 messages, N=2: 2 running, 2 reserved, 2 left in Redis), and
those reserved jobs start in the order they were taken.

The embedded default (``filesystem://``) uses ``server.fs_broker`` (atomic message writes) and no
broadcasts: no revoke on cancel and no remote control, so no per-worker control files pile up.
"""
from __future__ import annotations

from celery import Celery

from server.routing import transport_priority_options
from server.settings import Settings


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for ``settings``, with no tasks registered (sending needs none)."""
    app = Celery("distillery", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        broker_transport=settings.broker_transport,
        worker_enable_remote_control=settings.broker_broadcasts,
        broker_transport_options={**settings.broker_transport_options(), **transport_priority_options(settings)},
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
    app.distillery_settings = settings  # read by worker.tasks only; server code is passed its settings
    return app
