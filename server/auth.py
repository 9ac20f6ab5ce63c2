"""API tokens and who is asking.

Tokens are random (``secrets.token_urlsafe``); only their sha256 is stored, so a database dump
does not leak usable credentials. A request is authenticated by ``Authorization: Bearer TOKEN``
or, for the dashboard, by a Flask session holding ``user_id``:

    from server.auth import user_for_token, login_user
    user = user_for_token(form_token)      # User | None
    if user: login_user(user)              # sets session["user_id"]; the API then accepts the session

Handlers decorated with :func:`login_required` find the user in ``flask.g.user``.
"""
from __future__ import annotations

import functools
import hashlib
import secrets
from typing import Callable, TypeVar

from flask import current_app, g, request, session
from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import ApiToken, User

F = TypeVar("F", bound=Callable)
TOKEN_PREFIX = "dst_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db: Session, username: str, admin: bool = False) -> str:
    """Create the user if needed (promote to admin if asked) and return a new token (shown once)."""
    user = db.scalar(select(User).where(User.name == username))
    if user is None:
        user = User(name=username, is_admin=admin)
        db.add(user)
        db.flush()
    elif admin and not user.is_admin:
        user.is_admin = True
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.add(ApiToken(user_id=user.id, token_hash=hash_token(token)))
    db.commit()
    return token


def user_for_token(token: str | None, db: Session | None = None) -> User | None:
    """The user owning ``token`` or None. Uses the request's session inside an app context."""
    if not token:
        return None
    db = db or current_app.extensions["distillery.db"].scoped()
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token.strip())))
    return row.user if row is not None else None


def login_user(user: User) -> None:
    """Remember ``user`` in the Flask session (dashboard login); the API accepts it too."""
    session["user_id"] = user.id


def logout_user() -> None:
    session.pop("user_id", None)


def current_user() -> User | None:
    """The authenticated user of this request (bearer token first, then the session), or None."""
    if "user" in g:
        return g.user
    user = None
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        user = user_for_token(header[7:])
    elif "user_id" in session:
        db = current_app.extensions["distillery.db"].scoped()
        user = db.get(User, session["user_id"])
    g.user = user
    return user


def login_required(fn: F) -> F:
    """401 unless the request carries a valid token or a logged-in session."""
    from .api.base import ApiError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if current_user() is None:
            if request.headers.get("Authorization"):
                raise ApiError(401, "unauthorized", "invalid API token", "Authorization")
            raise ApiError(401, "unauthorized", "missing token: send 'Authorization: Bearer TOKEN' "
                           "(create one with `distillery token create --user NAME`)", "Authorization")
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def can_see(user: User, owner_id: int) -> bool:
    """Users see their own rows; admins see everything."""
    return user.is_admin or user.id == owner_id
