"""Shared handler helpers: errors, body parsing, fetch-or-404, pagination (Redash's handlers/base)."""
from __future__ import annotations

from typing import Any, Mapping, TypeVar

from flask import current_app, g, jsonify, request
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..auth import can_see

T = TypeVar("T")


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", "field"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def response(self):
        resp = jsonify({"error": {"code": self.code, "message": self.message, "field": self.field}})
        resp.status_code = self.status
        return resp


def db() -> Session:
    return current_app.extensions["distillery.db"].scoped()


def settings():
    return current_app.extensions["distillery.settings"]


def json_body(allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:
    """The request's JSON object with only ``allowed`` keys; anything else is a 4xx naming the key."""
    limit = settings().max_json_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"JSON body larger than {limit} bytes", "body")
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send a JSON body with Content-Type: application/json", "body")
    raw = request.get_data(cache=True)
    if len(raw) > limit:
        raise ApiError(413, "payload_too_large", f"JSON body larger than {limit} bytes", "body")
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "invalid_json", "the body is not valid JSON", "body")
    if not isinstance(body, Mapping):
        raise ApiError(400, "invalid_json", f"the body must be a JSON object, got {type(body).__name__}", "body")
    for key in body:
        if key not in allowed:
            raise ApiError(400, "unknown_field", f"unknown key; allowed keys: {', '.join(sorted(allowed))}", key)
    for key in sorted(required):
        if key not in body:
            raise ApiError(400, "missing_field", "is required", key)
    return dict(body)


def get_object_or_404(model: type[T], ident: int, owner_attr: str = "owner_id") -> T:
    """The row ``ident`` if it exists and the current user may see it; another user's row is a 404
    (not 403) so ids of other users' work are not disclosed."""
    obj = db().get(model, ident)
    if obj is None or not can_see(g.user, getattr(obj, owner_attr)):
        raise ApiError(404, "not_found", f"{model.__name__.lower()} {ident} not found")
    return obj


def arg_int(name: str, default: int, lo: int = 0, hi: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"must be an integer, got {raw!r}", name) from None
    if value < lo or (hi is not None and value > hi):
        raise ApiError(400, "invalid_parameter", f"must be between {lo} and {hi}", name)
    return value


def paginate(query: Select, key: str, serialize, id_column=None, max_limit: int = 200) -> dict[str, Any]:
    """Newest-first pages: ``?limit=&offset=`` or keyset ``?limit=&cursor=`` (ids below ``cursor``).

    Returns ``{key: [...], total, limit, offset, next_offset, next_cursor}``; ``total`` counts every
    match of the filters; ``next_cursor`` (the last id) keeps pages stable while rows are added.
    """
    limit = arg_int("limit", 50, 1, max_limit)
    offset = arg_int("offset", 0, 0)
    s = db()
    total = s.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    page = query
    if id_column is not None and request.args.get("cursor"):
        page = page.where(id_column < arg_int("cursor", 0, 1))
    rows = s.scalars(page.limit(limit + 1).offset(offset)).all()
    more, rows = len(rows) > limit, rows[:limit]
    return {key: [serialize(r) for r in rows], "total": total, "limit": limit, "offset": offset,
            "next_offset": offset + len(rows) if more else None,
            "next_cursor": rows[-1].id if more and rows else None}
