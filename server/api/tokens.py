"""API tokens: list them (never their secrets) and revoke one.

Users see and revoke their own tokens; admins see everyone's (``?user=NAME`` narrows) and revoke
any. Tokens are created on the server with ``distillery token create`` (the secret is shown once).
"""
from __future__ import annotations

from flask import g, jsonify
from sqlalchemy import select

from ..auth import is_live, login_required, revoke
from ..errors import ApiError
from ..models import ApiToken, User
from ..serializers import iso_utc
from .base import arg_name, db, get_object_or_404, paginate


def serialize_token(t: ApiToken) -> dict:
    return {"id": t.id, "user": t.user.name, "name": t.name, "created_at": iso_utc(t.created_at),
            "last_used_at": iso_utc(t.last_used_at), "expires_at": iso_utc(t.expires_at), "revoked_at": iso_utc(t.revoked_at),
            "active": is_live(t)}


@login_required
def list_tokens():
    q = select(ApiToken).order_by(ApiToken.id.desc())
    if not g.user.is_admin:
        q = q.where(ApiToken.user_id == g.user.id)
    name = arg_name("user")
    if name:
        q = q.join(User, ApiToken.user_id == User.id).where(User.name == name)
    return jsonify(paginate(q, "tokens", serialize_token, ApiToken.id))


@login_required
def revoke_token(token_id: int):
    row = get_object_or_404(ApiToken, token_id, owner_attr="user_id")
    if row is None:  # pragma: no cover - get_object_or_404 raises
        raise ApiError(404, "not_found", f"token {token_id} not found")
    return jsonify(serialize_token(revoke(db(), row)))
