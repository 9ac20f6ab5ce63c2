"""The dashboard's login form takes what users paste: the token, or the demo's shell line for it."""
from __future__ import annotations

import pytest

from server.auth import pasted_token


@pytest.mark.parametrize("text", ["TOK", "  TOK\n", "export DISTILLERY_TOKEN=TOK", "DISTILLERY_TOKEN=TOK",
                                  "export DISTILLERY_TOKEN='TOK'", 'DISTILLERY_TOKEN="TOK";', "export  DISTILLERY_TOKEN = TOK "])
def test_pasted_token(text):
    assert pasted_token(text) == "TOK"


def test_other_text_is_left_as_typed():
    assert pasted_token("export OTHER=TOK") == "export OTHER=TOK"
    assert pasted_token(None) == ""


@pytest.fixture
def app_and_token(tmp_path, make_app):
    from server.auth import create_token

    app = make_app(tmp_path, secret_key="k" * 64)
    with app.app_context():
        token = create_token(app.extensions["distillery.db"].scoped(), "ada")
    return app, token


@pytest.mark.parametrize("shape", ["export DISTILLERY_TOKEN={t}", "DISTILLERY_TOKEN=\"{t}\"", "{t}"])
def test_login_form_accepts_the_pasted_export_line(app_and_token, shape):
    app, token = app_and_token
    r = app.test_client().post("/login", data={"token": shape.format(t=token)})
    assert r.status_code == 302, r.get_data(as_text=True)


def test_login_form_still_refuses_a_wrong_token(app_and_token):
    app, _ = app_and_token
    assert app.test_client().post("/login", data={"token": "export DISTILLERY_TOKEN=nope"}).status_code == 401
