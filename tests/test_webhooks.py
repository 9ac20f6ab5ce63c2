"""Issue 22, webhooks: when a job ends its owner's webhooks are POSTed a signed JSON event.

A real HTTP receiver on 127.0.0.1 (a thread with ``http.server``) checks each request's
``X-Distillery-Signature`` with the webhook's secret, as a user's receiver would: a body signed with
another secret is refused (401). Its first answer can be a 500, to see the retry. The sending runs
``server.webhooks.collect``/``send_due`` on a migrated SQLite database, the code each worker's
``WebhookSender`` thread runs; the registration goes through the real Flask app."""
from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from server import webhooks
from server.models import Job, User, Webhook, WebhookDelivery, utcnow
from server.settings import Settings
from server.vocabulary import DELIVERY_DELIVERED, DELIVERY_FAILED, DELIVERY_PENDING, SIGNATURE_HEADER

SETTINGS = Settings(public_url="https://distillery.example.org", webhook_retry_s=0.0, webhook_max_attempts=3)


class Receiver:
    """POSTs land in ``received`` (verified or not); ``answers`` is the status codes to give, in order."""

    def __init__(self, secret: str, answers: list[int] | None = None):
        self.secret, self.answers, self.received = secret, list(answers or []), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = webhooks.verify(receiver.secret, body, self.headers.get(SIGNATURE_HEADER))
                receiver.received.append({"verified": ok, "body": json.loads(body), "path": self.path})
                status = 401 if not ok else (receiver.answers.pop(0) if receiver.answers else 200)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver("s" * 32)
    yield r
    r.close()


def _ended_job(s, owner: User, name: str, state: str = "succeeded", when=None) -> Job:
    job = Job(kind="teacher", name=name, state=state, config={}, owner_id=owner.id, attempt=1, progress={},
              metrics={"val_top1": 91.5}, finished_at=when or utcnow())
    s.add(job)
    s.commit()
    return job


def test_an_ended_job_is_posted_signed_once_and_retried_after_a_500(sqlite_session, receiver):
    s = sqlite_session
    alice = s.query(User).filter_by(name="alice").one()
    bob = User(name="bob")
    s.add(bob)
    s.commit()
    hook, secret = webhooks.register(s, alice, {"url": receiver.url, "secret": receiver.secret})
    assert secret == receiver.secret
    before = _ended_job(s, alice, "ended-before", when=hook.created_at - timedelta(seconds=5))
    job = _ended_job(s, alice, "mine")
    _ended_job(s, bob, "bobs")  # another user's job: never sent to alice's webhook
    receiver.answers = [500]

    assert webhooks.collect(s, SETTINGS) == 1
    assert webhooks.collect(s, SETTINGS) == 0  # recorded once, however often collected
    assert webhooks.send_due(s, SETTINGS) == 1
    d = s.query(WebhookDelivery).one()
    assert (d.state, d.attempts, d.last_status) == (DELIVERY_PENDING, 1, 500)  # the 500: tried again later
    assert webhooks.send_due(s, SETTINGS, now=utcnow() + timedelta(seconds=1)) == 1
    s.refresh(d)
    assert (d.state, d.attempts, d.last_status) == (DELIVERY_DELIVERED, 2, 200)

    assert [r["verified"] for r in receiver.received] == [True, True]
    event = receiver.received[-1]["body"]
    assert event["event"] == "job.finished" and event["delivery_id"] == d.id
    assert {k: event["job"][k] for k in ("id", "state", "top1", "owner")} == \
        {"id": job.id, "state": "succeeded", "top1": 91.5, "owner": "alice"}
    assert event["job"]["url"] == f"https://distillery.example.org/jobs/{job.id}"
    assert all(r["body"]["job"]["id"] not in (before.id,) for r in receiver.received)
    assert webhooks.send_due(s, SETTINGS, now=utcnow() + timedelta(hours=2)) == 0  # delivered: never again


def test_a_receiver_refuses_a_body_signed_with_another_secret(sqlite_session, receiver):
    s = sqlite_session
    alice = s.query(User).filter_by(name="alice").one()
    webhooks.register(s, alice, {"url": receiver.url, "secret": "another-secret-not-the-receivers"})
    _ended_job(s, alice, "mine", state="failed")
    webhooks.collect(s, SETTINGS)
    for k in range(3):
        webhooks.send_due(s, SETTINGS, now=utcnow() + timedelta(seconds=k))
    d = s.query(WebhookDelivery).one()
    assert [r["verified"] for r in receiver.received] == [False, False, False]
    assert (d.state, d.last_status, d.attempts) == (DELIVERY_FAILED, 401, 3)  # max attempts, then failed


def test_an_unreachable_receiver_is_recorded_and_backs_off(sqlite_session):
    s = sqlite_session
    alice = s.query(User).filter_by(name="alice").one()
    webhooks.register(s, alice, {"url": "http://127.0.0.1:9/nothing-listens"})
    _ended_job(s, alice, "mine")
    webhooks.collect(s, SETTINGS)
    slow = SETTINGS.replace(webhook_retry_s=30.0)
    webhooks.send_due(s, slow)
    d = s.query(WebhookDelivery).one()
    assert d.state == DELIVERY_PENDING and d.last_status is None and "ConnectionError" in d.last_error
    assert d.next_attempt_at.replace(tzinfo=None) > (utcnow() + timedelta(seconds=25)).replace(tzinfo=None)
    assert webhooks.send_due(s, slow) == 0  # not due yet
    assert webhooks.backoff_s(slow, 3) == 120.0 and webhooks.backoff_s(slow, 20) == webhooks.MAX_BACKOFF_S


def test_the_api_registers_lists_and_removes_webhooks(tmp_path, make_app):
    from server.auth import create_token

    app = make_app(tmp_path)
    with app.extensions["distillery.db"].session() as s:
        alice, bob = create_token(s, "alice"), create_token(s, "bob")
    c = app.test_client()

    def call(method, path, token, **kw):
        return c.open(f"/api/v1{path}", method=method, headers={"Authorization": f"Bearer {token}"}, **kw)

    for body, field in (({"url": "ftp://example.org/x"}, "url"), ({"url": "http://user:pw@example.org/"}, "url"),
                        ({"url": "https://example.org/", "secret": "short"}, "secret"), ({"uri": "https://x.org"}, "uri"),
                        ({"url": "https://example.org/", "secret": None}, "secret"),
                        ({"url": "https://example.org/", "secret": "spaces are not printable-ascii-only"}, "secret")):
        r = call("POST", "/webhooks", alice, json=body)
        assert r.status_code == 400 and r.get_json()["error"]["field"] == field, (body, r.get_json())
    r = call("POST", "/webhooks", alice, json={"url": "https://example.org/hook"})
    assert r.status_code == 201 and len(r.get_json()["secret"]) >= 32  # generated, shown this once
    hook_id = r.get_json()["id"]
    listed = call("GET", "/webhooks", alice).get_json()["webhooks"]
    assert [h["id"] for h in listed] == [hook_id] and "secret" not in listed[0]
    assert call("GET", "/webhooks", bob).get_json()["webhooks"] == []
    assert call("GET", f"/webhooks/{hook_id}/deliveries", bob).status_code == 404  # another user's: not disclosed
    assert call("DELETE", f"/webhooks/{hook_id}", bob).status_code == 404
    assert call("GET", f"/webhooks/{hook_id}/deliveries", alice).get_json()["deliveries"] == []
    assert call("DELETE", f"/webhooks/{hook_id}", alice).status_code == 200
    with app.extensions["distillery.db"].session() as s:
        assert s.query(Webhook).count() == 0
