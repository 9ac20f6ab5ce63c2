"""Issue 12, item 5 (b, c) through the REST API and the server CLI: who may set a priority and a
user's cap on jobs in flight, and the 429 over the cap. No worker runs here: every job stays queued,
which is what counts against the cap (the fixture cancels them at the end)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import teacher

pytestmark = pytest.mark.integration


def user_limit(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distillery", "user", "limit", *args], env=stack.env,
                          capture_output=True, text=True, timeout=120)


def error(r) -> dict:
    return r.json()["error"]


def test_only_admins_submit_high_priority(stack, tmp_path):
    cfg = teacher(stack.data)
    r = stack.api("POST", "/jobs", json={"kind": "teacher", "name": "vip", "config": cfg, "priority": "high"})
    assert r.status_code == 403 and error(r)["field"] == "priority", r.text
    r = stack.api("POST", "/jobs", json={"kind": "teacher", "name": "odd", "config": cfg, "priority": "urgent"})
    assert r.status_code == 400 and error(r)["field"] == "priority", r.text
    assert stack.job(stack.submit("low", cfg, priority="low"))["priority"] == "low"
    assert stack.job(stack.submit("high", cfg, user="root", priority="high"))["priority"] == "high"
    assert stack.job(stack.submit("plain", cfg))["priority"] == "normal"
    spec = stack.api("GET", "/openapi.json").json()["components"]["schemas"]["JobSubmit"]["properties"]["priority"]
    assert spec["enum"] == ["low", "normal", "high"]

    job_file = tmp_path / "job.json"  # the client: `distillery submit FILE --priority low`
    job_file.write_text(json.dumps(cfg))
    out = subprocess.run([sys.executable, "-m", "distillery", "submit", str(job_file), "--priority", "low"],
                         env={**stack.env, "DISTILLERY_URL": stack.url, "DISTILLERY_TOKEN": stack.tokens["alice"]},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "low priority" in out.stdout, out.stdout + out.stderr
    assert stack.job(int(out.stdout.split()[-1]))["priority"] == "low"


def test_an_admin_caps_one_users_jobs_in_flight(stack):
    cfg = teacher(stack.data)
    path = "/users/alice/limits"
    assert stack.api("GET", path).json()["max_jobs_in_flight"] is None  # one's own limits: readable
    r = stack.api("PUT", path, json={"max_jobs_in_flight": 5})
    assert r.status_code == 403, r.text  # but only admins set them
    assert stack.api("GET", "/users/bob/limits").status_code == 403  # nor read another's
    assert stack.api("PUT", "/users/nobody/limits", user="root", json={"max_jobs_in_flight": 1}).status_code == 404
    for bad in ("1", -1, True, 1.5):
        r = stack.api("PUT", path, user="root", json={"max_jobs_in_flight": bad})
        assert r.status_code == 400 and error(r)["field"] == "max_jobs_in_flight", (bad, r.text)
    r = stack.api("PUT", path, user="root", json={"max_jobs_in_flight": 1, "gpus": 2})
    assert r.status_code == 400 and error(r)["field"] == "gpus", r.text

    r = stack.api("PUT", path, user="root", json={"max_jobs_in_flight": 1})
    assert r.status_code == 200 and r.json()["effective_max_jobs_in_flight"] == 1, r.text
    stack.submit("first", cfg)
    r = stack.api("POST", "/jobs", json={"kind": "teacher", "name": "second", "config": cfg})
    assert r.status_code == 429 and "at most 1 " in error(r)["message"], r.text
    assert stack.api("GET", path, user="root").json()["jobs_in_flight"] == 1
    stack.submit("bob's", cfg, user="bob")  # the cap is alice's only

    r = stack.api("PUT", path, user="root", json={"max_jobs_in_flight": None})  # back to the server's default
    assert r.json()["effective_max_jobs_in_flight"] == r.json()["default_max_jobs_in_flight"] == 20, r.text
    stack.submit("second", cfg)


def test_the_server_cli_sets_and_clears_a_cap(stack):
    out = user_limit(stack, "bob", "--max-jobs-in-flight", "0")
    assert out.returncode == 0 and "at most 0 jobs in flight" in out.stdout, out.stderr
    r = stack.api("POST", "/jobs", user="bob", json={"kind": "teacher", "name": "no", "config": teacher(stack.data)})
    assert r.status_code == 429 and "at most 0 " in error(r)["message"], r.text
    assert stack.api("GET", "/users/bob/limits", user="bob").json()["max_jobs_in_flight"] == 0
    out = user_limit(stack, "bob", "--default")
    assert out.returncode == 0 and "server default" in out.stdout, out.stderr
    stack.submit("yes", teacher(stack.data), user="bob")
    assert user_limit(stack, "nobody").returncode == 1
    out = user_limit(stack, "bob", "--max-jobs-in-flight", "-3")
    assert out.returncode == 2 and "max-jobs-in-flight" in out.stderr, out.stderr
