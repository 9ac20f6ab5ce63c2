"""Webhooks: register a URL to hear when your jobs end, list and remove them, read each event's sending
record. What is sent, how it is signed and retried: ``server.webhooks``.

A user sees and removes their own webhooks; an admin sees everyone's. The secret is in the answer to
POST only.
"""
from __future__ import annotations

from flask import g, jsonify
from sqlalchemy import select

from .. import webhooks
from ..auth import login_required
from ..errors import ApiError
from ..models import Webhook, WebhookDelivery
from .base import db, get_object_or_404, json_body, paginate


@login_required
def create_webhook():
    try:
        hook, secret = webhooks.register(db(), g.user, json_body({"url", "secret"}, required={"url"}))
    except webhooks.WebhookLimit as e:
        raise ApiError(409, "too_many_webhooks", e.message, e.field) from None
    except webhooks.WebhookError as e:
        raise ApiError(400, "invalid_webhook", e.message, e.field) from None
    return jsonify(webhooks.serialize_webhook(hook, secret)), 201


@login_required
def list_webhooks():
    q = select(Webhook).order_by(Webhook.id.desc())
    if not g.user.is_admin:
        q = q.where(Webhook.owner_id == g.user.id)
    return jsonify(paginate(q, "webhooks", webhooks.serialize_webhook, Webhook.id))


@login_required
def delete_webhook(webhook_id: int):
    hook = get_object_or_404(Webhook, webhook_id)
    out = webhooks.serialize_webhook(hook)
    db().delete(hook)
    db().commit()
    return jsonify(out)


@login_required
def list_deliveries(webhook_id: int):
    """Newest first: each event's state (pending, delivered, failed), tries, last answer and body."""
    hook = get_object_or_404(Webhook, webhook_id)
    q = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id).order_by(WebhookDelivery.id.desc())
    return jsonify(paginate(q, "deliveries", webhooks.serialize_delivery, WebhookDelivery.id))


def openapi_parts(ref, json_response, err, id_param, page) -> tuple[dict, dict]:
    """What the OpenAPI document says about webhooks: (schemas, paths)."""
    from ..vocabulary import DELIVERY_STATES

    nullable_str, nullable_int = {"type": ["string", "null"]}, {"type": ["integer", "null"]}
    schemas = {
        "Webhook": {"type": "object", "required": ["id", "url"], "properties": {
            "id": {"type": "integer"}, "url": {"type": "string"}, "owner": nullable_str, "created_at": nullable_str,
            "secret": {"type": "string", "description": "only in the answer to POST /webhooks: keep it to verify signatures"}}},
        "WebhookSubmit": {"type": "object", "required": ["url"], "additionalProperties": False, "properties": {
            "url": {"type": "string", "minLength": 1, "maxLength": webhooks.MAX_URL_CHARS, "pattern": webhooks.URL_PATTERN,
                    "description": "POSTed a signed JSON event when one of your jobs ends"},
            "secret": {"type": "string", "minLength": webhooks.SECRET_CHARS[0], "maxLength": webhooks.SECRET_CHARS[1],
                       "pattern": webhooks.SECRET_PATTERN,
                       "description": "HMAC-SHA256 key of the X-Distillery-Signature header; omitted: one is generated"}}},
        "WebhookDelivery": {"type": "object", "required": ["id", "webhook_id", "job_id", "state"], "properties": {
            "id": {"type": "integer"}, "webhook_id": {"type": "integer"}, "job_id": {"type": "integer"},
            "attempt": {"type": "integer"}, "state": {"type": "string", "enum": list(DELIVERY_STATES)},
            "attempts": {"type": "integer"}, "next_attempt_at": nullable_str, "last_status": nullable_int,
            "last_error": nullable_str, "created_at": nullable_str, "delivered_at": nullable_str,
            "payload": {"type": "object"}}},
    }
    paths = {
        "/webhooks": {
            "post": {"summary": "Register a URL to be POSTed a signed event when one of your jobs ends",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": ref("WebhookSubmit")}}},
                     "responses": {"201": json_response(ref("Webhook"), "Registered (the secret is shown this once)"),
                                   **err(400, 401, 409, 413, 415)}},
            "get": {"summary": "Your webhooks (an admin: everyone's)",
                    "responses": {"200": json_response(page("webhooks", "Webhook")), **err(400, 401)}}},
        "/webhooks/{webhook_id}": {"delete": {"summary": "Remove a webhook (its pending events are dropped)",
                                              "parameters": [id_param("webhook_id")],
                                              "responses": {"200": json_response(ref("Webhook"), "Removed"), **err(401, 404)}}},
        "/webhooks/{webhook_id}/deliveries": {"get": {
            "summary": "Each event sent to a webhook: state, tries, last answer, body",
            "parameters": [id_param("webhook_id")],
            "responses": {"200": json_response(page("deliveries", "WebhookDelivery")), **err(400, 401, 404)}}},
    }
    return schemas, paths
