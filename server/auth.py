"""API tokens, who is asking, and CSRF for cookie sessions.

Tokens are random (``secrets.token_urlsafe``); only their sha256 is stored, so a database dump
does not leak usable credentials. A token may expire (``expires_at``) and be revoked
(``revoked_at``); either ends it at once, for the API and for dashboard sessions opened with it.
A request is authenticated by ``Authorization: Bearer TOKEN`` or, for the dashboard, by a Flask
session holding the id of the token used to log in:

    from server.auth import token_row, login_user
    row = token_row(form_token)            # ApiToken | None (valid: not expired, not revoked)
    if row: login_user(row)                # the session now names the token; the API accepts it

A browser sends cookies with cross-site requests, so a state change authenticated only by the
session cookie must also carry ``X-CSRF-Token`` (the per-session value the pages embed in
``<meta name="csrf-token">``). Bearer calls need no such token: a foreign page cannot set that header.

Handlers decorated with :func:`login_required` find the user in ``flask.g.user``.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta, timezone
from typing import Callable, TypeVar

from flask import current_app, g, request, session
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .errors import ApiError
from .models import ApiToken, User

F = TypeVar("F", bound=Callable)
TOKEN_PREFIX = "dst_"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
LAST_USED_EVERY = timedelta(seconds=60)  # last_used_at is written at most this often per token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def utc(ts: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they were written as UTC."""
    return ts.replace(tzinfo=timezone.utc) if ts is not None and ts.tzinfo is None else ts


def create_token(db: Session, username: str, admin: bool = False, name: str | None = None,
                 expires_in_days: float | None = None) -> str:
    """Create the user if needed (promote to admin if asked) and return a new token (shown once)."""
    user = db.scalar(select(User).where(User.name == username))
    if user is None:
        user = User(name=username, is_admin=admin)
        db.add(user)
        db.flush()
    elif admin and not user.is_admin:
        user.is_admin = True
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = datetime.now(timezone.utc) + timedelta(days=expires_in_days) if expires_in_days else None
    db.add(ApiToken(user_id=user.id, token_hash=hash_token(token), name=name, expires_at=expires))
    db.commit()
    return token


def is_live(row: ApiToken | None, now: datetime | None = None) -> bool:
    """Not revoked and not expired."""
    now = now or datetime.now(timezone.utc)
    return row is not None and row.revoked_at is None and (row.expires_at is None or utc(row.expires_at) > now)


def _db(db: Session | None) -> Session:
    return db or current_app.extensions["distillery.db"].scoped()


def _touch(db: Session, row: ApiToken, now: datetime) -> None:
    """Record when the token was last used (throttled, so reads stay reads most of the time)."""
    last = utc(row.last_used_at)
    if last is None or now - last > LAST_USED_EVERY:
        db.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        db.commit()


_PASTED = re.compile(r"^\s*(?:export\s+)?DISTILLERY_TOKEN\s*=\s*(.*?)\s*;?\s*$", re.DOTALL)


def pasted_token(text: str | None) -> str:
    """The token in what a user pasted into the login form: the token itself, or the shell line the
    demo and ``distillery token create`` users copy, ``export DISTILLERY_TOKEN=...`` or
    ``DISTILLERY_TOKEN="..."`` (quotes stripped). ``static/login.js`` applies the same rule to the
    token it keeps for the pages' API calls."""
    text = (text or "").strip()
    m = _PASTED.match(text)
    if m:
        text = m.group(1)
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1].strip()
    return text


def token_row(token: str | None, db: Session | None = None) -> ApiToken | None:
    """The live token row for ``token``, or None (unknown, expired or revoked)."""
    if not token:
        return None
    db = _db(db)
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token.strip())))
    now = datetime.now(timezone.utc)
    if not is_live(row, now):
        return None
    _touch(db, row, now)
    return row


def user_for_token(token: str | None, db: Session | None = None) -> User | None:
    """The user owning a live ``token`` or None. Uses the request's session inside an app context."""
    row = token_row(token, db)
    return row.user if row is not None else None


def login_user(row: ApiToken) -> None:
    """Remember the token's user in the Flask session (dashboard login), with a fresh CSRF value."""
    session["user_id"] = row.user_id
    session["token_id"] = row.id
    session["csrf"] = secrets.token_urlsafe(32)


def logout_user() -> None:
    for key in ("user_id", "token_id", "csrf"):
        session.pop(key, None)


def csrf_token() -> str:
    """This session's CSRF value (empty when logged out), for ``<meta name="csrf-token">``."""
    return session.get("csrf", "")


def _session_user() -> User | None:
    """The session's user while the token it was opened with is still live."""
    token_id, user_id = session.get("token_id"), session.get("user_id")
    if not isinstance(token_id, int) or not isinstance(user_id, int):
        return None
    db = _db(None)
    row = db.get(ApiToken, token_id)
    if not is_live(row) or row.user_id != user_id:
        return None
    return row.user


def current_user() -> User | None:
    """The authenticated user of this request (bearer token first, then the session), or None.
    ``g.auth`` says which: "bearer" or "session"."""
    if "user" in g:
        return g.user
    user, how = None, None
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        user, how = user_for_token(header[7:]), "bearer"
    elif "user_id" in session:
        user, how = _session_user(), "session"
    g.user, g.auth = user, how if user is not None else None
    return user


def check_csrf() -> None:
    """A state change authenticated by the session cookie must echo the session's CSRF value."""
    if g.get("auth") != "session" or request.method in SAFE_METHODS:
        return
    expected, sent = session.get("csrf") or "", request.headers.get(CSRF_HEADER, "")
    if not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise ApiError(403, "csrf_failed", f"a cookie-authenticated change needs the {CSRF_HEADER} header of the page "
                       "(or use 'Authorization: Bearer TOKEN')", CSRF_HEADER)


def login_required(fn: F) -> F:
    """401 unless the request carries a live token or a logged-in session; 403 on a missing CSRF token."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if current_user() is None:
            if request.headers.get("Authorization"):
                raise ApiError(401, "unauthorized", "invalid, expired or revoked API token", "Authorization")
            raise ApiError(401, "unauthorized", "missing token: send 'Authorization: Bearer TOKEN' "
                           "(create one with `distillery token create --user NAME`)", "Authorization")
        check_csrf()
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def can_see(user: User, owner_id: int) -> bool:
    """Users see their own rows; admins see everything."""
    return user.is_admin or user.id == owner_id


def revoke(db: Session, row: ApiToken) -> ApiToken:
    """Revoke ``row`` now (idempotent); its API calls and dashboard sessions stop at once."""
    if row.revoked_at is None:
        row.revoked_at = datetime.now(timezone.utc)
        db.commit()
    return row
