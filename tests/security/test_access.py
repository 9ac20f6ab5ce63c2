"""Issue 19, items 4 and 6, against the real app in-process (SQLite, the filesystem broker, Flask-Limiter's
memory storage: the embedded deployment's shape): one refusal for every path a caller may not name,
existing or not; failed logins and bad tokens limited per address while valid tokens never are; who
may read /metrics. The live, Redis-backed counterparts are in test_access_live.py."""
from __future__ import annotations

import io
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from server.settings import Settings

from .test_attacks import job


@dataclass
class App:
    client: object
    settings: Settings
    tokens: dict
    data: Path

    def call(self, method: str, path: str, user: str | None = "alice", **kw):
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return self.client.open(path if path.startswith("/metrics") else f"/api/v1{path}", method=method,
                                headers={**headers, **kw.pop("headers", {})}, **kw)


def digits_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in (f"{s}/{c}/{i}.png" for s in ("train", "val") for c in ("a", "b") for i in range(2)):
            img = io.BytesIO()
            Image.new("RGB", (8, 8), (10, 20, 30)).save(img, format="PNG")
            zf.writestr(name, img.getvalue())
    return buf.getvalue()


@pytest.fixture
def make_app(tmp_path, migrated_sqlite):
    """``make_app(**settings)``: the app on a fresh copy of the migrated database, with alice, bob and the
    admin root, a shared data root holding a small ImageFolder, and bob's uploaded dataset ``bobs``."""
    from server.app import create_app
    from server.auth import create_token

    def make(**changes) -> App:
        shutil.copy(migrated_sqlite, tmp_path / "db.sqlite")
        data = tmp_path / "data" / "shared"
        for split in ("train", "val"):
            for c in ("a", "b"):
                (data / split / c).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8)).save(data / split / c / "0.png")
        st = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", storage=str(tmp_path / "storage"),
                      broker_dir=str(tmp_path / "broker"), state_dir=str(tmp_path / "state"),
                      data_roots=(str(tmp_path / "data"),)).replace(**changes)
        st.ensure_dirs()
        app = create_app(st)
        with app.app_context():
            s = app.extensions["distillery.db"].scoped()
            tokens = {u: create_token(s, u, admin=u == "root") for u in ("alice", "bob", "root")}
        out = App(app.test_client(), st, tokens, data)
        r = out.call("POST", "/datasets", user="bob", data={"name": "bobs", "file": (io.BytesIO(digits_zip()), "d.zip")})
        assert r.status_code == 201, r.get_json()
        return out

    return make


# Item 4: no existence oracle -------------------------------------------------------------------------------
def _answers(app: App, path: str, bodies: list[dict]) -> list[tuple[int, bytes]]:
    return [(r.status_code, r.data) for r in (app.call("POST", path, json=b) for b in bodies)]


def _job_answers(app: App, section: str, key: str, paths: list[Path]) -> list[tuple[int, bytes]]:
    """(status, body) of a job submission naming each of ``paths`` as ``config.SECTION.KEY``."""
    bodies = []
    for p in paths:
        body = job(str(app.data))
        body["config"][section][key] = str(p)
        bodies.append(body)
    return _answers(app, "/jobs", bodies)


def test_a_forbidden_data_path_gets_the_same_answer_whether_it_exists_or_not(make_app):
    app = make_app()
    storage = app.settings.storage_path
    forbidden = [storage / "datasets" / "bobs" / "train",  # exists: bob's upload
                 storage / "datasets" / "nobody" / "train",  # does not exist
                 storage / "runs",  # exists: the service's own folder
                 Path("/etc"), Path("/no/such/folder")]  # outside every root, existing or not
    answers = _job_answers(app, "data", "train", forbidden)
    assert answers[0][0] == 400 and b"config.data.train" in answers[0][1], answers[0]
    assert len(set(answers)) == 1, answers
    answers = _answers(app, "/datasets", [{"name": "stolen", "path": str(p.parent)} for p in forbidden])
    assert answers[0][0] == 400 and len(set(answers)) == 1, answers
    # Inside the caller's own scope a missing folder may say so.
    body = job(str(app.data))
    body["config"]["data"]["train"] = str(app.data / "nope")
    r = app.call("POST", "/jobs", json=body)
    assert r.status_code == 400 and "does not exist" in r.get_json()["error"]["message"], r.get_json()


def test_a_forbidden_checkpoint_path_gets_the_same_answer_whether_it_exists_or_not(make_app):
    app = make_app()
    ckpt = app.settings.artifacts_path / "1" / "checkpoint.pth"  # as the worker lays out another user's artifact
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    answers = _job_answers(app, "teacher", "checkpoint", [
        ckpt, ckpt.with_name("missing.pth"), app.settings.artifacts_path / "9" / "checkpoint.pth",
        Path(app.settings.broker_dir).resolve(), Path("/etc/passwd"), Path("/no/such.pth")])
    assert answers[0][0] == 400 and b"config.teacher.checkpoint" in answers[0][1], answers[0]
    assert len(set(answers)) == 1, answers


# Item 6: rate limits on failures only, /metrics ------------------------------------------------------------
def test_bad_tokens_past_the_limit_are_429_while_valid_tokens_keep_working(make_app):
    app = make_app(bad_token_limit="3/minute")
    app.tokens["bad"] = "dst_" + "x" * 43
    for _ in range(10):  # successful calls are never counted
        assert app.call("GET", "/jobs").status_code == 200
    assert [app.call("GET", "/jobs", user="bad").status_code for _ in range(3)] == [401] * 3
    r = app.call("GET", "/jobs", user="bad")
    assert r.status_code == 429 and r.get_json()["error"]["code"] == "too_many_requests", r.get_json()
    assert 0 < int(r.headers["Retry-After"]) <= 60
    for _ in range(10):  # from the same address, a valid token is never refused
        assert app.call("GET", "/jobs").status_code == 200
        assert app.call("GET", "/jobs", user="root").status_code == 200
    assert app.call("GET", "/jobs", user=None).status_code == 401  # no token is not a guess
    assert app.call("GET", "/jobs", user="bad").status_code == 429


def test_failed_logins_past_the_limit_are_429_while_a_valid_token_logs_in(make_app):
    app = make_app(login_limit="3/minute")
    for _ in range(3):
        assert app.client.post("/login", data={"token": "dst_wrong"}).status_code == 401
    r = app.client.post("/login", data={"token": "dst_wrong"})
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 60
    assert app.client.post("/login", data={"token": app.tokens["alice"]}).status_code == 302
    assert app.client.get("/api/v1/jobs").status_code == 200  # the session it opened works
    assert app.client.post("/login", data={"token": "dst_wrong"}).status_code == 429


@pytest.mark.parametrize("mode, expected", [("open", (200, 200, 200)), ("admin", (401, 403, 200)), ("off", (404, 404, 404))])
def test_metrics_in_each_mode(make_app, mode, expected):
    app = make_app(metrics=mode)
    got = tuple(app.call("GET", "/metrics", user=u).status_code for u in (None, "alice", "root"))
    assert got == expected
    if mode != "off":
        assert 'distillery_jobs{state="queued"}' in app.call("GET", "/metrics", user="root").get_data(as_text=True)


def test_metrics_default_is_admin():
    assert Settings.from_env({}).metrics == "admin"
    with pytest.raises(ValueError, match="DISTILLERY_METRICS"):
        Settings.from_env({"DISTILLERY_METRICS": "public"})
    with pytest.raises(ValueError, match="DISTILLERY_BAD_TOKEN_LIMIT"):
        Settings.from_env({"DISTILLERY_BAD_TOKEN_LIMIT": "lots"})


def test_rate_limit_counts_live_in_redis_when_the_broker_is_redis():
    assert Settings(broker_url="redis://h:6379/2").rate_limit_storage == "redis://h:6379/2"
    assert Settings().rate_limit_storage == "memory://"


# Item 6: server paths only for admins ----------------------------------------------------------------------
def strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_non_admin_answers_name_datasets_not_server_folders(make_app):
    app = make_app()
    storage = str(app.settings.storage_path)
    body = job("dataset:bobs")
    r = app.call("POST", "/jobs", user="bob", json=body)
    assert r.status_code == 201, r.get_json()
    job_id = r.get_json()["id"]
    seen = {}
    for path in ("/datasets", "/datasets/1", f"/jobs/{job_id}", "/jobs", "/artifacts"):
        seen[path] = app.call("GET", path, user="bob").get_json()
        assert not [s for s in strings(seen[path]) if storage in s], (path, seen[path])
    assert seen[f"/jobs/{job_id}"]["config"]["data"]["train"] == "dataset:bobs/train"
    assert seen["/datasets/1"]["train"] == "dataset:bobs/train"
    # ... and that is what a resubmission may send: the config a user reads back is one they can submit.
    again = {**body, "config": {k: v for k, v in seen[f"/jobs/{job_id}"]["config"].items() if k in body["config"]}}
    assert app.call("POST", "/jobs", user="bob", json=again).status_code == 201
    admin = app.call("GET", f"/jobs/{job_id}", user="root").get_json()
    assert admin["config"]["data"]["train"] == f"{storage}/datasets/bobs/train"
    assert app.call("GET", "/datasets/1", user="root").get_json()["path"] == f"{storage}/datasets/bobs"


def test_a_run_command_line_reads_without_server_folders():
    import sys

    from server.api.redaction import dataset_folders, internal_folders, rewriter

    st = Settings(storage="/srv/distillery/storage", broker_dir="/srv/distillery/broker")
    rewrite = rewriter(internal_folders(st) + dataset_folders([("digits", "/srv/distillery/storage/datasets/digits")]))
    line = (f"$ {sys.prefix}/bin/python -m deit_core.train --config /srv/distillery/storage/runs/7/attempt-1/job.json "
            "--val /srv/distillery/storage/datasets/digits/val --data /srv/distillery/storage2/x")
    assert rewrite(line) == ("$ <python>/bin/python -m deit_core.train --config <storage>/runs/7/attempt-1/job.json "
                             "--val dataset:digits/val --data /srv/distillery/storage2/x")
