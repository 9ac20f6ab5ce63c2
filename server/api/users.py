"""A user's limits: ``GET``/``PUT /users/NAME/limits`` (``{"max_jobs_in_flight": N | null}``).

Admins read and set anyone's; a user may read their own (to see why a submission was a 429) and
nothing else. The rules and the write live in ``server.quotas`` (shared with
``distillery user limit``).
"""
from __future__ import annotations

from flask import g, jsonify
from sqlalchemy import select

from .. import quotas
from ..auth import login_required
from ..errors import ApiError
from ..models import User
from .base import db, json_body, settings

MAX_NAME = 120


def _user_or_404(name: str) -> User:
    if len(name) > MAX_NAME or any(ord(c) < 32 for c in name):  # no such user can exist; keep it from the database
        raise ApiError(404, "not_found", "user not found")
    user = db().scalar(select(User).where(User.name == name))
    if user is None:
        raise ApiError(404, "not_found", f"no user named {name!r}")
    return user


def _admin_only(what: str) -> None:
    if not g.user.is_admin:
        raise ApiError(403, "forbidden", f"only admins may {what}", "user")


@login_required
def get_limits(name: str):
    if name != g.user.name:
        _admin_only("read another user's limits")
    return jsonify(quotas.limits_of(db(), settings(), _user_or_404(name)))


@login_required
def put_limits(name: str):
    _admin_only("set limits")
    user = _user_or_404(name)
    body = json_body(set(quotas.LIMIT_KEYS), required=set(quotas.LIMIT_KEYS))
    try:
        quotas.set_limits(db(), user, body)
    except quotas.LimitError as e:
        raise ApiError(400, "invalid_limit", e.message, e.field) from None
    return jsonify(quotas.limits_of(db(), settings(), user))
