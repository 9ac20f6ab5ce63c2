"""Rate limits on credential guessing: failed dashboard logins and API requests with a bad bearer token.

Only failures are counted and only failures are refused: a request whose token is live is exempt
before any counting, so a busy dashboard or CLI never meets a 429, even from an address that an
attacker (or a script with a revoked token) shares. Past the limit a failure is answered 429 with
``Retry-After`` instead of 401. Counts are kept per client address by Flask-Limiter, in the
deployment's Redis when the broker is one (``Settings.rate_limit_storage``), else in the process.

Trade-off, said plainly: a live token is still served past the limit, so the limit does not make an
online search of the token space slower for the one guess that hits; tokens are 256 random bits, so
that search is hopeless anyway. What it stops is the flood: hundreds of refused attempts a second,
each a database lookup and a log line.
"""
from __future__ import annotations

from flask import Flask, Response, request
from flask_limiter import ApplicationLimit, Limiter
from flask_limiter.util import get_remote_address

from ..auth import current_user, token_row
from ..settings import Settings

LOGIN_ENDPOINT = "dashboard.login"  # the dashboard's login form (server.dashboard.views.login)


def _bearer_sent() -> bool:
    return request.headers.get("Authorization", "").lower().startswith("bearer ")


def _login_post() -> bool:
    return request.endpoint == LOGIN_ENDPOINT and request.method == "POST"


def _bearer_ok() -> bool:
    """Exempt unless the request carries a bearer token that is not live (``current_user`` caches
    the lookup in ``g``, so the handler does not repeat it)."""
    return not _bearer_sent() or _login_post() or current_user() is not None


def _login_ok() -> bool:
    """Exempt unless it is a login form post whose token is not live."""
    return not _login_post() or token_row((request.form.get("token") or "").strip() or None) is not None


def _refused(response: Response) -> bool:
    return response.status_code == 401


def init_app(app: Flask, settings: Settings) -> Limiter:
    """Bind the two limits (shared across every route, keyed by client address) to ``app``."""
    limits = [
        ApplicationLimit(limit_provider=settings.bad_token_limit, key_function=get_remote_address, scope="bad_token",
                         exempt_when=_bearer_ok, deduct_when=_refused,
                         error_message="too many requests with an invalid token from your address; retry later"),
        ApplicationLimit(limit_provider=settings.login_limit, key_function=get_remote_address, scope="login",
                         exempt_when=_login_ok, deduct_when=_refused,
                         error_message="too many failed logins from your address; retry later"),
    ]
    limiter = Limiter(get_remote_address, application_limits=limits, headers_enabled=True,
                      storage_uri=settings.rate_limit_storage, key_prefix=f"distillery:{settings.queue}",
                      strategy="moving-window")
    limiter.init_app(app)
    return limiter
