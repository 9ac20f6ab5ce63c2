"""The one error type the API answers with, in its own module so that authentication, handlers and
the job life cycle can all raise it without importing each other."""
from __future__ import annotations

from flask import jsonify


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", "field"}}`` with ``status``.

    ``errors``, when a request had several problems (a config checked whole), is every one of them as
    ``[{field, message}]``, answered as ``error.errors``; ``field``/``message`` stay the first one's so
    a client that reads one error still reads the right one.
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 errors: list[dict[str, str | None]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.errors = errors

    def response(self):
        body = {"code": self.code, "message": self.message, "field": self.field}
        if self.errors:
            body["errors"] = self.errors
        resp = jsonify({"error": body})
        resp.status_code = self.status
        return resp
