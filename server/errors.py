"""The one error type the API answers with, in its own module so that authentication, handlers and
the job life cycle can all raise it without importing each other."""
from __future__ import annotations

from flask import jsonify


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", "field"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def response(self):
        resp = jsonify({"error": {"code": self.code, "message": self.message, "field": self.field}})
        resp.status_code = self.status
        return resp
