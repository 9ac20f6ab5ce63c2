"""Shared handler helpers: body parsing, fetch-or-404, pagination (Redash's handlers/base)."""
from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping, TypeVar

from flask import current_app, g, request
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from deit_core.config import unknown_key

from ..auth import can_see
from ..errors import ApiError
from ..vocabulary import MAX_ID

T = TypeVar("T")
MAX_DEPTH = 32  # nesting of a JSON body; a job config needs 3
MAX_OFFSET = 1_000_000_000  # paging offsets (and cursors: ids are 32-bit)
MAX_CURSOR = MAX_ID
READ_CHUNK = 64 << 10


class _NonFinite:
    """Stands in for NaN/Infinity (and floats that overflow, like 1e400) while a body is parsed."""

    def __init__(self, text: str):
        self.text = text


def _float(text: str):
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _check_values(node: Any, path: str = "", depth: int = 0) -> None:
    """Refuse non-finite numbers (naming their field) and nesting deeper than MAX_DEPTH, iteratively
    enough that a hostile body cannot reach Python's recursion limit (parsing already bounded it)."""
    if depth > MAX_DEPTH:
        raise ApiError(400, "invalid_json", f"nested deeper than {MAX_DEPTH} levels", path or "body")
    if isinstance(node, _NonFinite):
        raise ApiError(400, "invalid_number", f"{node.text} is not a finite number", path or "body")
    if isinstance(node, dict):
        for k, v in node.items():
            _check_values(v, f"{path}.{k}" if path else str(k), depth + 1)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_values(v, f"{path}[{i}]" if path else f"[{i}]", depth + 1)


def read_body(limit: int) -> bytes:
    """The request body, read in chunks and refused as soon as it passes ``limit`` bytes, whether or
    not it declared a Content-Length (a chunked body is never buffered whole)."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"JSON body larger than {limit} bytes", "body")
    chunks, size = [], 0
    while True:
        chunk = request.stream.read(READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"JSON body larger than {limit} bytes", "body")
        chunks.append(chunk)


def parse_json(raw: bytes) -> Any:
    """Strict JSON: no NaN/Infinity, no overflowing floats, bounded nesting; 400 naming the field."""
    try:
        body = json.loads(raw, parse_constant=_NonFinite, parse_float=_float)
    except RecursionError:
        raise ApiError(400, "invalid_json", f"nested deeper than {MAX_DEPTH} levels", "body") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON", "body") from None
    _check_values(body)
    return body


def db() -> Session:
    return current_app.extensions["distillery.db"].scoped()


def settings():
    return current_app.extensions["distillery.settings"]


def celery():
    """The sending-only Celery app (``server.queue``)."""
    return current_app.extensions["distillery.celery"]


def json_body(allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:
    """The request's JSON object with only ``allowed`` keys; anything else is a 4xx naming the key."""
    limit = settings().max_json_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"JSON body larger than {limit} bytes", "body")
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send a JSON body with Content-Type: application/json", "body")
    body = parse_json(read_body(limit))
    if not isinstance(body, Mapping):
        raise ApiError(400, "invalid_json", f"the body must be a JSON object, got {type(body).__name__}", "body")
    check_keys(body, allowed, required)
    return dict(body)


def check_keys(body: Mapping[str, Any], allowed: set[str], required: set[str] = frozenset()) -> None:
    """Every unknown key (with the close allowed one: ``confg`` -> did you mean config?) and every missing
    required one, in one 400: ``field``/``message``/``code`` are the first problem's, ``errors`` all of them."""
    problems = [(str(key), unknown_key(key, allowed), "unknown_field") for key in body if key not in allowed]
    problems += [(key, "is required", "missing_field") for key in sorted(required) if key not in body]
    if problems:
        field, message, code = problems[0]
        raise ApiError(400, code, message, field, [{"field": f, "message": m} for f, m, _ in problems])


def get_object_or_404(model: type[T], ident: int, owner_attr: str = "owner_id") -> T:
    """The row ``ident`` if it exists and the current user may see it; another user's row is a 404
    (not 403) so ids of other users' work are not disclosed."""
    obj = db().get(model, ident)
    if obj is None or not can_see(g.user, getattr(obj, owner_attr)):
        raise ApiError(404, "not_found", f"{model.__name__.lower()} {ident} not found")
    return obj


NAME_PATTERN = r"^[A-Za-z0-9_.:@-]{1,120}$"  # metric and user names as query parameters (documented in openapi)
_NAME_RE = re.compile(NAME_PATTERN)


def arg_name(name: str) -> str | None:
    """An optional name-like query parameter (``?name=val_top1``, ``?user=alice``): letters, digits
    and ``_.:@-``, at most 120; anything else (a NUL byte the database would refuse, say) is a 400."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if not _NAME_RE.fullmatch(raw):
        raise ApiError(400, "invalid_parameter", "must be 1-120 letters, digits or _.:@-", name)
    return raw


def arg_int(name: str, default: int, lo: int = 0, hi: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None:  # absent; present but empty is a 400 like any other non-integer
        return default
    if len(raw) > 20:
        raise ApiError(400, "invalid_parameter", "must be an integer of at most 20 digits", name)
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"must be an integer, got {raw!r}", name) from None
    if value < lo or (hi is not None and value > hi):
        raise ApiError(400, "invalid_parameter", f"must be between {lo} and {hi}" if hi is not None else f"must be >= {lo}", name)
    return value


def paginate(query: Select, key: str, serialize, id_column=None, max_limit: int = 200, prepare=None) -> dict[str, Any]:
    """Newest-first pages: ``?limit=&offset=`` or keyset ``?limit=&cursor=`` (ids below ``cursor``).

    Returns ``{key: [...], total, limit, offset, next_offset, next_cursor}``; ``total`` counts every
    match of the filters; ``next_cursor`` (the last id) keeps pages stable while rows are added.
    ``prepare(rows)``, if given, loads what the page's rows need in a fixed number of queries and
    returns the serializer to use, so a page of 200 costs the queries of a page of 1.
    """
    limit = arg_int("limit", 50, 1, max_limit)
    offset = arg_int("offset", 0, 0, MAX_OFFSET)
    s = db()
    total = s.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    page = query
    if id_column is not None and "cursor" in request.args:
        page = page.where(id_column < arg_int("cursor", 0, 1, MAX_CURSOR))
    rows = s.scalars(page.limit(limit + 1).offset(offset)).all()
    more, rows = len(rows) > limit, rows[:limit]
    if prepare is not None:
        serialize = prepare(rows)
    return {key: [serialize(r) for r in rows], "total": total, "limit": limit, "offset": offset,
            "next_offset": offset + len(rows) if more else None,
            "next_cursor": rows[-1].id if more and rows else None}
