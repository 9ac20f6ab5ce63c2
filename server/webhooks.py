"""Webhooks: when a user's job reaches a final state, POST a signed JSON event to the URLs they registered.

The event is derived from the job rows, not raised by whoever ended the job: every worker's
:class:`worker.webhook_sender.WebhookSender` calls :func:`collect` (ended jobs of a webhook's owner
with no delivery row yet become ``pending`` rows; the unique (webhook, job, attempt) key lets two
workers race harmlessly) and :func:`send_due` (claims due rows by moving their ``next_attempt_at``
forward with a compare-and-set, POSTs, records the answer). So a job ended by a run, a cancel, the
reconciler or a sweep is announced the same way, and an event survives a worker or broker restart.

Delivery is at least once: a worker killed between the POST and the record sends it again after the
claim runs out; receivers dedupe on ``delivery_id``. Each POST carries
``X-Distillery-Signature: sha256=<HMAC-SHA256(secret, raw body) in hex>``; a receiver recomputes it
over the bytes it got before trusting the body. Redirects are not followed; a non-2xx answer or a
network error is retried after ``webhook_retry_s`` doubling per try (at most an hour), up to
``webhook_max_attempts`` tries, then the row is ``failed``. Events are only for jobs that ended after
the webhook was registered, and within :data:`HORIZON` of now (a deployment whose workers were all
down longer does not replay old news).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from sqlalchemy import and_, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import Job, User, Webhook, WebhookDelivery, utcnow
from .serializers import baseline_info, exported_top1, iso_utc, serialize_artifact
from .settings import Settings
from .vocabulary import (
    DELIVERY_DELIVERED,
    DELIVERY_FAILED,
    DELIVERY_PENDING,
    FINAL_STATES,
    SIGNATURE_HEADER,
    WEBHOOK_EVENT,
)

MAX_WEBHOOKS_PER_USER = 20
MAX_URL_CHARS = 2048
SECRET_CHARS = (16, 200)
# What a webhook URL and secret may be, as a JSON Schema pattern too (server.api.webhooks): http(s), a host
# name or address without credentials, an optional port, then printable ASCII; a secret of printable ASCII.
URL_PATTERN = r"^https?://[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?([/?#][\x21-\x7e]*)?$"
SECRET_PATTERN = r"^[\x21-\x7e]+$"
_URL_RE, _SECRET_RE = re.compile(URL_PATTERN), re.compile(SECRET_PATTERN)
HORIZON = timedelta(days=1)
CLAIM = timedelta(seconds=60)  # a claimed row is not sent by anyone else for this long (the POST's timeout is 10 s)
MAX_BACKOFF_S = 3600.0
POST_TIMEOUT_S = 10.0


class WebhookError(ValueError):
    """A registration the server refuses (answered 400 naming ``field``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class WebhookLimit(WebhookError):
    """The user has as many webhooks as one may have (answered 409: the request is fine, the state is full)."""


def register(db: Session, user: User, body: Mapping[str, Any]) -> tuple[Webhook, str]:
    """A new webhook from ``{"url": ..., "secret": optional}``; returns it and its secret (generated
    when none is given), which the caller shows once."""
    url = body.get("url")
    if not isinstance(url, str) or not url:
        raise WebhookError("url", "is required: the http(s) URL to POST job events to")
    if "@" in url.partition("://")[2].split("/", 1)[0]:  # user:password@host: the pattern refuses it, this says why
        raise WebhookError("url", "must not carry credentials; the secret signs each event instead")
    if len(url) > MAX_URL_CHARS or not _URL_RE.fullmatch(url):
        raise WebhookError("url", f"must be an http:// or https:// URL with a host name or address, in printable ASCII, "
                           f"at most {MAX_URL_CHARS} characters")
    secret = body.get("secret")
    if "secret" not in body:
        secret = secrets.token_urlsafe(32)
    elif not isinstance(secret, str) or not SECRET_CHARS[0] <= len(secret) <= SECRET_CHARS[1] or not _SECRET_RE.fullmatch(secret):
        raise WebhookError("secret", f"must be {SECRET_CHARS[0]} to {SECRET_CHARS[1]} printable ASCII characters, no spaces")
    count = db.query(Webhook).filter(Webhook.owner_id == user.id).count()
    if count >= MAX_WEBHOOKS_PER_USER:
        raise WebhookLimit("url", f"you have {count} webhooks, the most one user may have; remove one first")
    hook = Webhook(owner_id=user.id, url=url, secret=secret)
    db.add(hook)
    db.commit()
    return hook, secret


def serialize_webhook(hook: Webhook, secret: str | None = None) -> dict[str, Any]:
    """A webhook as the API shows it; the secret only in the answer to its registration."""
    out = {"id": hook.id, "url": hook.url, "owner": hook.owner.name if hook.owner else None,
           "created_at": iso_utc(hook.created_at)}
    if secret is not None:
        out["secret"] = secret
    return out


def serialize_delivery(d: WebhookDelivery) -> dict[str, Any]:
    return {"id": d.id, "webhook_id": d.webhook_id, "job_id": d.job_id, "attempt": d.attempt, "state": d.state,
            "attempts": d.attempts, "next_attempt_at": iso_utc(d.next_attempt_at) if d.state == DELIVERY_PENDING else None,
            "last_status": d.last_status, "last_error": d.last_error, "created_at": iso_utc(d.created_at),
            "delivered_at": iso_utc(d.delivered_at), "payload": d.payload}


def event_payload(job: Job, settings: Settings) -> dict[str, Any]:
    """What a receiver learns of an ended job: who, what, how it ended, its top-1 and gain, and where
    its files are (absolute URLs under ``DISTILLERY_PUBLIC_URL`` when it is set)."""
    base = baseline_info(job)
    artifacts = []
    for a in job.artifacts:
        row = serialize_artifact(a)
        artifacts.append({k: row[k] for k in ("id", "format", "name", "filename", "size", "sha256")}
                         | {"download_url": settings.public_url + row["download_url"]})
    return {"event": WEBHOOK_EVENT, "job": {
        "id": job.id, "kind": job.kind, "name": job.name, "state": job.state, "attempt": job.attempt,
        "owner": job.owner.name if job.owner else None, "error": job.error, "finished_at": iso_utc(job.finished_at),
        "top1": exported_top1(job),
        "gain": None if base is None else {k: base.get(k) for k in ("gain", "gain_ci95", "verdict", "significant", "seeds")},
        "url": f"{settings.public_url}/jobs/{job.id}", "artifacts": artifacts}}


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does (and the tests' receiver does): compare in constant time."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def collect(db: Session, settings: Settings, now: datetime | None = None) -> int:
    """Record a ``pending`` delivery for every ended job attempt a webhook has not heard of; the count."""
    now = now or utcnow()
    known = exists().where(and_(WebhookDelivery.webhook_id == Webhook.id, WebhookDelivery.job_id == Job.id,
                                WebhookDelivery.attempt == Job.attempt))
    rows = db.execute(select(Webhook, Job).join(Job, Job.owner_id == Webhook.owner_id)
                      .where(Job.state.in_(FINAL_STATES), Job.finished_at.is_not(None),
                             Job.finished_at >= Webhook.created_at, Job.finished_at >= now - HORIZON, ~known)
                      .order_by(Job.finished_at).limit(500)).all()
    added = 0
    for hook, job in rows:
        try:
            with db.begin_nested():
                db.add(WebhookDelivery(webhook_id=hook.id, job_id=job.id, attempt=job.attempt, state=DELIVERY_PENDING,
                                       payload=event_payload(job, settings), next_attempt_at=now))
            added += 1
        except IntegrityError:  # another worker recorded it first
            pass
    db.commit()
    return added


@dataclass(frozen=True)
class Answer:
    """How one POST went: the status (None: no answer) and the error to record."""

    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


Poster = Callable[[str, bytes, dict[str, str]], Answer]


def post_with_requests(url: str, body: bytes, headers: dict[str, str]) -> Answer:
    """The real sender: one POST, no redirects, a 10 s timeout."""
    import requests

    try:
        resp = requests.post(url, data=body, headers=headers, timeout=POST_TIMEOUT_S, allow_redirects=False)
    except requests.RequestException as e:
        return Answer(None, f"{type(e).__name__}: {e}"[:500])
    return Answer(resp.status_code, None if 200 <= resp.status_code < 300 else f"HTTP {resp.status_code}: {resp.text[:200]}")


def backoff_s(settings: Settings, attempts: int) -> float:
    """The wait after the ``attempts``-th failed try."""
    return min(MAX_BACKOFF_S, settings.webhook_retry_s * 2 ** max(0, attempts - 1))


def send_due(db: Session, settings: Settings, post: Poster = post_with_requests, now: datetime | None = None,
             limit: int = 50) -> int:
    """Send the pending deliveries whose time has come (each claimed first, so one worker sends it); the count sent."""
    now = now or utcnow()
    due = db.execute(select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
                     .where(WebhookDelivery.state == DELIVERY_PENDING, WebhookDelivery.next_attempt_at <= now)
                     .order_by(WebhookDelivery.next_attempt_at).limit(limit)).all()
    sent = 0
    for delivery_id, at in due:
        claimed = db.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                                           WebhookDelivery.state == DELIVERY_PENDING,
                                                           WebhookDelivery.next_attempt_at == at)
                             .values(next_attempt_at=now + CLAIM).execution_options(synchronize_session=False))
        db.commit()
        if claimed.rowcount != 1:
            continue
        d = db.get(WebhookDelivery, delivery_id)
        hook = db.get(Webhook, d.webhook_id)
        body = json.dumps({**d.payload, "delivery_id": d.id, "sent_at": iso_utc(utcnow())}, sort_keys=True).encode()
        answer = post(hook.url, body, {"Content-Type": "application/json", SIGNATURE_HEADER: sign(hook.secret, body),
                                       "X-Distillery-Event": WEBHOOK_EVENT, "X-Distillery-Delivery": str(d.id),
                                       "User-Agent": "distillery-webhooks"})
        _record(d, answer, settings)
        db.commit()
        sent += 1
    return sent


def _record(d: WebhookDelivery, answer: Answer, settings: Settings) -> None:
    d.attempts += 1
    d.last_status, d.last_error = answer.status, answer.error
    if answer.ok:
        d.state, d.delivered_at = DELIVERY_DELIVERED, utcnow()
    elif d.attempts >= settings.webhook_max_attempts:
        d.state = DELIVERY_FAILED
    else:
        d.next_attempt_at = utcnow() + timedelta(seconds=backoff_s(settings, d.attempts))
