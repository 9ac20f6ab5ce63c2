"""Dashboard routes: login/logout and the page shells (jobs, one job, submit).

A page is rendered only for a logged-in session; the data itself is fetched by the page's script
from ``/api/v1`` with the same credentials, so every permission check stays in the API.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import redirect, render_template, request, session, url_for

from server.dashboard import bp
from server.vocabulary import MAX_SEEDS

log = logging.getLogger(__name__)

SESSION_USER_ID = "user_id"  # set by server.auth.login_user
SESSION_USER_NAME = "user_name"


def _display_name(user: Any) -> str:
    return str(getattr(user, "name", None) or getattr(user, "id", "?"))


def log_in(token: str) -> bool:
    """Put the owner of ``token`` in the Flask session; False if the token is not valid.

    ``server.auth`` owns what the session holds (``login_user`` sets the ``user_id`` the API reads),
    so the dashboard and the API agree on who is logged in; the dashboard only adds a display name.
    """
    from server.auth import login_user, pasted_token, token_row

    token = pasted_token(token)
    row = token_row(token) if token else None
    if row is None:
        return False
    session.clear()
    login_user(row)
    session[SESSION_USER_NAME] = _display_name(row.user)
    session.permanent = True
    return True


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if session.get(SESSION_USER_ID) is None:
            return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths, so the login form cannot become an open redirect.

    Browsers drop tabs and newlines from URLs (``/\t/evil.example`` becomes ``//evil.example``) and read
    ``\\`` as ``/``, so any control character, whitespace or backslash refuses the target outright.
    """
    if (target and target.startswith("/") and not target.startswith("//")
            and not any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c == "\\" for c in target)):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("dashboard.jobs")


def _same_origin() -> bool:
    """A form post from another site (login CSRF, forced logout) carries its Origin; refuse it.
    Browsers send Origin on every cross-origin POST; a missing one (old browsers, scripts) is allowed."""
    origin = request.headers.get("Origin")
    if origin is None:
        return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
    return origin == request.host_url.rstrip("/")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        if not _same_origin():
            return "cross-site login refused", 403
        if log_in((request.form.get("token") or "").strip()):
            return redirect(_safe_next(request.form.get("next")))
        error = "That token is not valid. Create one with: distillery token create --user NAME"
    return render_template("login.html", error=error, next=request.values.get("next", "")), (401 if error else 200)


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    from server.auth import logout_user

    if not _same_origin():
        return "cross-site logout refused", 403
    logout_user()
    session.clear()
    return redirect(url_for("dashboard.login"))


@bp.route("/")
@login_required
def jobs() -> str:
    return render_template("jobs.html", page="jobs")


def _recipe_json() -> str:
    return json.dumps(recipe_defaults()).replace("<", "\\u003c")


@bp.route("/jobs/<int:job_id>")
@login_required
def job(job_id: int) -> str:
    return render_template("job.html", page="job", job_id=job_id, recipe_json=_recipe_json())


@bp.route("/sweeps/<int:job_id>")
@login_required
def sweep(job_id: int) -> str:
    """A sweep: its trials table, top-1 vs .ptl latency with the Pareto front, and promote."""
    return render_template("sweep.html", page="sweep", job_id=job_id)


@bp.route("/compare")
@login_required
def compare() -> str:
    """2-6 jobs side by side (``?ids=1,2,3``): params that differ, val top-1 curves, the exported models."""
    return render_template("compare.html", page="compare", recipe_json=_recipe_json())


@bp.route("/webhooks")
@login_required
def webhooks() -> str:
    """Your webhooks (a signed POST when one of your jobs ends): add, remove, and what each was sent."""
    return render_template("webhooks.html", page="webhooks")


def recipe_defaults() -> dict[str, Any]:
    """The DeiT recipe as the submit form's starting values, read from the one config schema."""
    from deit_core import config as cfg

    sections = {"data": cfg.DataConfig, "student": cfg.StudentConfig, "teacher": cfg.TeacherConfig,
                "distillation": cfg.DistillationConfig, "train": cfg.TrainConfig,
                "resources": cfg.ResourcesConfig}
    out: dict[str, Any] = {}
    for name, cls in sections.items():
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                fields[f.name] = {"default": f.default, "type": str(f.type)}
            else:
                fields[f.name] = {"default": None, "type": str(f.type), "required": True}
        out[name] = fields
    out["_choices"] = {"distillation.type": list(cfg.DISTILLATION_TYPES),
                       "train.mixed_precision": list(cfg.PRECISIONS), "kind": list(cfg.KINDS)}
    return out


def _presets_json() -> str:
    """deit_core.presets for the form's preset buttons (the same values ``preset`` applies in the API)."""
    from deit_core.presets import PRESETS

    return json.dumps([p.to_dict() for p in PRESETS.values()]).replace("<", "\\u003c")


@bp.route("/submit")
@login_required
def submit() -> str:
    return render_template("submit.html", page="submit", recipe_json=_recipe_json(), presets_json=_presets_json(),
                           max_seeds=MAX_SEEDS)
