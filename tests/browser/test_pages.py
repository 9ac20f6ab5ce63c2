"""Dashboard routes through Flask's test client on a fresh SQLite database: no worker, no browser.

They pin what the browser tests take for granted: pages need a login, the login accepts exactly the
API's tokens and logs the API in too, `next` cannot leave the site, and the submit form carries the
DeiT recipe from deit_core/config.py.
"""
from __future__ import annotations

import json
import re

import pytest


@pytest.fixture()
def app(tmp_path):
    from server import migrate
    from server.app import create_app
    from server.settings import Settings

    url = f"sqlite:///{tmp_path}/d.db"
    migrate.upgrade(url)
    settings = Settings(database_url=url, broker_dir=str(tmp_path / "broker"), storage=str(tmp_path / "storage"),
                        data_roots=(str(tmp_path),), secret_key="test")
    settings.ensure_dirs()
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture()
def token(app):
    from server.auth import create_token

    with app.extensions["distillery.db"].session() as s:
        return create_token(s, "alice")


def test_pages_need_a_login(app):
    c = app.test_client()
    for path in ("/", "/jobs/1", "/submit"):
        resp = c.get(path)
        assert resp.status_code == 302 and "/login" in resp.headers["Location"], path
    assert c.get("/login").status_code == 200


def test_login_takes_exactly_the_api_tokens_and_logs_the_api_in(app, token):
    c = app.test_client()
    resp = c.post("/login", data={"token": "dst_wrong"})
    assert resp.status_code == 401 and b"not valid" in resp.data
    assert c.get("/api/v1/jobs").status_code == 401

    resp = c.post("/login", data={"token": token, "next": "/submit"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/submit")
    assert c.get("/").status_code == 200
    assert c.get("/api/v1/jobs").status_code == 200  # the session is enough for the API

    c.post("/logout")
    assert c.get("/").status_code == 302
    assert c.get("/api/v1/jobs").status_code == 401


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "\\\\evil", ""])
def test_login_next_stays_on_the_site(app, token, target):
    resp = app.test_client().post("/login", data={"token": token, "next": target})
    assert resp.headers["Location"] == "/"


def test_submit_form_carries_the_deit_recipe(app, token):
    from deit_core.config import TrainConfig

    c = app.test_client()
    c.post("/login", data={"token": token})
    html = c.get("/submit").get_data(as_text=True)
    recipe = json.loads(re.search(r'<script id="recipe" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert recipe["train"]["epochs"]["default"] == TrainConfig.epochs == 300
    assert recipe["train"]["aa"]["default"] == "rand-m9-mstd0.5-inc1"
    assert recipe["data"]["train"]["required"] is True
    assert recipe["_choices"]["distillation.type"] == ["none", "soft", "hard"]


def test_static_assets_are_local(app, token):
    c = app.test_client()
    c.post("/login", data={"token": token})
    for page in ("/", "/jobs/1", "/submit"):
        html = c.get(page).get_data(as_text=True)
        assert "http://" not in html and "https://" not in html, f"{page} references another site"
        for src in re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', html):
            assert c.get(src).status_code == 200, src
