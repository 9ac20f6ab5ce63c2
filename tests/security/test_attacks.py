"""Issue 11, as an attacker with an ordinary account would try it: each test makes the attack and
asserts the refusal. Against the live API of ``conftest.api`` (gunicorn, PostgreSQL, Redis, no worker)."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.service.conftest import teacher_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def tiny_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in (f"{s}/{c}/{i}.png" for s in ("train", "val") for c in ("a", "b") for i in range(2)):
            zf.writestr(name, png())
    return buf.getvalue()


def job(data: str, **train) -> dict:
    cfg = teacher_config(data)
    cfg["resources"] = {"processes": 1}
    cfg["train"].update(train)
    return {"kind": "teacher", "name": "probe", "config": cfg}


def upload(api, user: str, name: str, blob: bytes, filename: str = "d.zip", **kw) -> requests.Response:
    return api.call("POST", "/datasets", user=user, data={"name": name}, files={"file": (filename, blob)}, **kw)


def login(api, user: str) -> tuple[requests.Session, str]:
    """A dashboard session (cookie) and the CSRF value its pages carry."""
    s = requests.Session()
    r = s.post(f"{api.url}/login", data={"token": api.tokens[user]}, allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    page = s.get(f"{api.url}/", timeout=30).text
    return s, re.search(r'<meta name="csrf-token" content="([^"]+)">', page).group(1)


def queued_job(api, user: str) -> int:
    r = api.call("POST", "/jobs", user=user, json=job(str(api.data)))
    assert r.status_code == 201, r.text
    return r.json()["id"]


# 1. Forgeable admin session -------------------------------------------------------------------------
def test_session_signed_with_a_published_key_is_worthless(api):
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    admin_id = api.sql("SELECT id FROM users WHERE name = 'root'")[0][0]
    for key in ("dev-only-change-me", "change-me"):
        app = Flask("forge")
        app.secret_key = key
        cookie = SecureCookieSessionInterface().get_signing_serializer(app).dumps({"user_id": admin_id})
        r = requests.get(f"{api.url}/api/v1/jobs", cookies={"session": cookie}, timeout=30)
        assert r.status_code == 401, (key, r.text)


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize("key", [None, "dev-only-change-me", "change-me", "short"])
def test_serve_and_worker_refuse_a_missing_or_weak_key(api, command, key):
    env = {k: v for k, v in api.env.items() if k != "DISTILLERY_SECRET_KEY"}
    if key is not None:
        env["DISTILLERY_SECRET_KEY"] = key
    r = subprocess.run([sys.executable, "-m", "distillery", command], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "DISTILLERY_SECRET_KEY" in r.stderr and "secrets.token_hex" in r.stderr


def test_embedded_default_generates_one_private_key_and_keeps_it(tmp_path, api):
    env = {k: v for k, v in api.env.items() if not k.startswith("DISTILLERY_")}
    code = "from server.cli import embedded_settings; print(embedded_settings().secret_key)"
    keys = [subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                           capture_output=True, text=True, check=True, timeout=120).stdout.strip() for _ in range(2)]
    path = tmp_path / "var" / "secret_key"
    assert keys[0] == keys[1] == path.read_text().strip() and len(keys[0]) >= 32
    assert path.stat().st_mode & 0o777 == 0o600


def test_compose_has_no_usable_default_key():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text and "DISTILLERY_SECRET_KEY:?" in text


# 2. CSRF ------------------------------------------------------------------------------------------
def test_cookie_only_changes_need_the_csrf_token(api):
    api.token("csrf-victim")
    job_id = queued_job(api, "csrf-victim")
    s, csrf = login(api, "csrf-victim")
    evil = {"Origin": "https://evil.example"}
    assert s.get(f"{api.url}/api/v1/jobs/{job_id}", headers=evil, timeout=30).status_code == 200  # reads are fine
    for path in (f"/jobs/{job_id}/cancel", f"/jobs/{job_id}/retry"):
        r = s.post(f"{api.url}/api/v1{path}", headers=evil, timeout=30)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", (path, r.text)
    r = s.post(f"{api.url}/api/v1/datasets", headers=evil, data={"name": "csrf-ds"}, files={"file": ("d.zip", tiny_zip())},
               timeout=30)
    assert r.status_code == 403, r.text
    r = s.post(f"{api.url}/api/v1/jobs", headers={**evil, "X-CSRF-Token": "guess"}, json=job(str(api.data)), timeout=30)
    assert r.status_code == 403, r.text
    assert api.sql("SELECT count(*) FROM datasets WHERE name = 'csrf-ds'")[0][0] == 0
    # The page's own calls carry the token and work; bearer calls never needed it.
    r = s.post(f"{api.url}/api/v1/jobs/{job_id}/cancel", headers={"X-CSRF-Token": csrf}, timeout=30)
    assert r.status_code == 202, r.text
    assert api.call("POST", f"/jobs/{job_id}/retry", user="csrf-victim").status_code == 202
    # Cross-site login and logout forms are refused.
    r = requests.post(f"{api.url}/login", data={"token": api.tokens["csrf-victim"]}, headers=evil, allow_redirects=False,
                      timeout=30)
    assert r.status_code == 403


def test_session_cookie_is_secure_on_https_and_short_lived(api):
    r = requests.post(f"{api.url}/login", data={"token": api.tokens["alice"]}, allow_redirects=False, timeout=30,
                      headers={"X-Forwarded-Proto": "https"})  # gunicorn trusts it from 127.0.0.1 (forwarded_allow_ips)
    cookie = r.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie, cookie
    expires = next(c for c in r.cookies if c.name == "session").expires
    assert expires - time.time() <= 8 * 3600 + 60, cookie
    plain = requests.post(f"{api.url}/login", data={"token": api.tokens["alice"]}, allow_redirects=False, timeout=30)
    assert "Secure" not in plain.headers["Set-Cookie"]


# 3. Other users' files by server path -----------------------------------------------------------------
def test_storage_paths_must_be_the_callers_own(api):
    api.token("mallory")
    r = upload(api, "bob", "bobs-data", tiny_zip())
    assert r.status_code == 201, r.text
    bobs = api.storage / "datasets" / "bobs-data"
    ckpt = api.storage / "artifacts" / "1" / "checkpoint.pth"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"weights")
    before = api.sql("SELECT count(*) FROM jobs")[0][0]
    body = job(str(api.data))
    body["config"]["data"]["train"] = str(bobs / "train")
    r = api.call("POST", "/jobs", user="mallory", json=body)
    assert r.status_code == 400 and r.json()["error"]["field"] == "config.data.train", r.text
    body = job(str(api.data))
    body["config"]["teacher"]["checkpoint"] = str(ckpt)
    r = api.call("POST", "/jobs", user="mallory", json=body)
    assert r.status_code == 400 and r.json()["error"]["field"] == "config.teacher.checkpoint", r.text
    r = api.call("POST", "/datasets", user="mallory", json={"name": "stolen", "path": str(bobs)})
    assert r.status_code == 400 and r.json()["error"]["field"] == "path", r.text
    body = job(str(api.data))
    body["config"]["data"].update(train="dataset:bobs-data/train", val="dataset:bobs-data/val")
    r = api.call("POST", "/jobs", user="mallory", json=body)
    assert r.status_code == 400, r.text
    assert api.sql("SELECT count(*) FROM jobs")[0][0] == before
    # The owner (by name or by path) and an admin may.
    own = job(str(api.data))
    own["config"]["data"].update(train="dataset:bobs-data/train", val=str(bobs / "val"))
    for user in ("bob", "root"):
        r = api.call("POST", "/jobs", user=user, json=own)
        assert r.status_code == 201, (user, r.text)
        api.call("POST", f"/jobs/{r.json()['id']}/cancel", user=user)


def test_symlinks_out_of_an_allowed_root_are_refused(api):
    linked = api.data.parent / "linked"
    for split in ("train", "val"):
        (linked / split).mkdir(parents=True, exist_ok=True)
        (linked / split / "0").symlink_to(api.data / split / "0")  # inside the root: fine
    (linked / "train" / "1").symlink_to(api.storage / "datasets" / "bobs-data" / "train" / "a")  # another user's upload
    body = job(str(api.data))
    body["config"]["data"].update(train=str(linked / "train"), val=str(linked / "val"))
    r = api.call("POST", "/jobs", user="alice", json=body)
    assert r.status_code == 400 and "symlink" in r.json()["error"]["message"], r.text
    (linked / "train" / "1").unlink()
    (linked / "train" / "1").symlink_to("/etc")
    r = api.call("POST", "/jobs", user="alice", json=body)
    assert r.status_code == 400 and "symlink" in r.json()["error"]["message"], r.text
    r = api.call("POST", "/datasets", user="alice", json={"name": "linked", "path": str(linked)})
    assert r.status_code == 400, r.text


# 4. Resource exhaustion -------------------------------------------------------------------------------
def test_zip_bomb_is_refused_from_its_headers(api):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train/a/0.png", png())
        zf.writestr("train/a/bomb.png", b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KB
    assert len(buf.getvalue()) < 200_000
    r = upload(api, "alice", "bomb", buf.getvalue())
    assert r.status_code == 400 and "ratio" in r.json()["error"]["message"], r.text
    assert not list((api.storage / "datasets").glob("*bomb*"))


def test_member_count_bomb_is_refused_at_the_first_member_past_the_limit(api):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i in range(50_001):
            tf.addfile(tarfile.TarInfo(f"train/a/{i}.png"), io.BytesIO(b""))
    t0 = time.monotonic()
    r = upload(api, "alice", "many", buf.getvalue(), filename="d.tar.gz")
    elapsed = time.monotonic() - t0
    assert r.status_code == 400 and "more than 50000 members" in r.json()["error"]["message"], r.text
    assert elapsed < 20, elapsed


def _peak_rss_kb(pid: int) -> int:
    """Peak RSS of the gunicorn master's children (the workers)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if re.search(rf"^PPid:\s+{pid}$", text, re.M):
            total += int(re.search(r"^VmHWM:\s+(\d+)", text, re.M).group(1))
    return total


def test_chunked_json_body_is_cut_off_at_the_limit(api):
    before = _peak_rss_kb(api.api_pid)
    assert before > 0

    def chunks():
        yield b'{"name": "'
        for _ in range(200):
            yield b"x" * (1 << 20)
        yield b'"}'

    try:
        r = requests.post(f"{api.url}/api/v1/jobs", data=chunks(), timeout=60,
                          headers={**api.h("alice"), "Content-Type": "application/json"})
        assert r.status_code == 413, r.text
    except requests.ConnectionError:
        pass  # the server answered 413 and closed while we were still sending: also a refusal
    grew_mb = (_peak_rss_kb(api.api_pid) - before) / 1024
    assert grew_mb < 50, f"API peak RSS grew {grew_mb:.0f} MB for a 200 MB chunked body"


@pytest.mark.parametrize("section,key,value", [("resources", "processes", 64), ("train", "batch_size", 65536),
                                               ("train", "epochs", 100000), ("data", "img_size", 1024)])
def test_configs_are_capped_by_what_the_deployment_offers(api, section, key, value):
    body = job(str(api.data))
    body["config"].setdefault(section, {})[key] = value
    r = api.call("POST", "/jobs", user="alice", json=body)
    assert r.status_code == 400 and r.json()["error"]["field"] == f"config.{section}.{key}", r.text
    assert "DISTILLERY_MAX_" in r.json()["error"]["message"]


def test_jobs_in_flight_are_capped_per_user(api):
    from tests.security.conftest import IN_FLIGHT

    api.token("greedy")
    ids = [queued_job(api, "greedy") for _ in range(IN_FLIGHT)]
    r = api.call("POST", "/jobs", user="greedy", json=job(str(api.data)))
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_jobs", r.text
    api.call("POST", f"/jobs/{ids[0]}/cancel", user="greedy")
    assert api.call("POST", f"/jobs/{ids[0]}/retry", user="root").status_code == 202  # back in flight: 3
    assert api.call("POST", f"/jobs/{ids[1]}/cancel", user="greedy").status_code == 202
    assert api.call("POST", "/jobs", user="greedy", json=job(str(api.data))).status_code == 201


# 5. Inputs that reached a 500 or poisoned output ----------------------------------------------------------
def test_hostile_inputs_are_4xx_with_the_error_body(api):
    deep = "[" * 100_000 + "]" * 100_000
    r = api.call("POST", "/jobs", data=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "body", r.text
    for path in ("/jobs/{}", "/jobs/{}/cancel", "/artifacts/{}", "/artifacts/{}/download", "/datasets/{}"):
        for ident in (2**31, 2**64 + 1, 10**30):
            method = "POST" if path.endswith("cancel") else "GET"
            r = api.call(method, path.format(ident))
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (path, ident, r.text)
    for query in ("/jobs?offset=99999999999999999999", "/jobs?cursor=99999999999999999999", "/artifacts?job_id=99999999999",
                  "/datasets?offset=1000000001"):
        r = api.call("GET", query)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_parameter", (query, r.text)
    api.token("hostile")
    job_id = queued_job(api, "hostile")
    for query in (f"/jobs/{job_id}/metrics?name=%27%00%C3%A2", "/tokens?user=a%00b"):  # NUL: the database refuses it
        r = api.call("GET", query, user="hostile")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_parameter", (query, r.text)
    assert api.call("POST", f"/jobs/{job_id}/cancel", user="hostile").status_code == 202
    r = api.call("DELETE", "/jobs")
    assert r.status_code == 405 and set(r.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}, r.headers


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused_at_the_edge(api, number):
    text = json.dumps(job(str(api.data))).replace('"lr": 0.001', f'"lr": {number}')
    if '"lr"' not in text:
        text = text.replace('"batch_size": 32', f'"batch_size": 32, "lr": {number}')
    r = api.call("POST", "/jobs", data=text, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "config.train.lr", r.text


def test_a_nan_metric_is_served_as_strict_json(api):
    job_id = queued_job(api, "root")
    api.sql("INSERT INTO metric_points (job_id, attempt, name, epoch, step, value) VALUES (:j, 1, 'loss', 0, 1, 'NaN')", j=job_id)
    api.sql("UPDATE jobs SET progress = CAST(:p AS json) WHERE id = :j", p='{"eta_s": 1e308}', j=job_id)

    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in {text[:300]}"))

    series = strict(api.call("GET", f"/jobs/{job_id}/metrics", user="root").text)["series"]
    assert series["loss"][0]["value"] is None
    strict(api.call("GET", f"/jobs/{job_id}", user="root").text)
    api.call("POST", f"/jobs/{job_id}/cancel", user="root")


# 6. Open redirect -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "/ /evil.example",
                                    "//evil.example", "/\\evil.example", "https://evil.example/"])
def test_login_next_cannot_leave_the_site(api, target):
    r = requests.post(f"{api.url}/login", data={"token": api.tokens["alice"], "next": target}, allow_redirects=False,
                      timeout=30)
    assert r.status_code == 302 and r.headers["Location"] == "/", r.headers["Location"]


# 7. Tokens -----------------------------------------------------------------------------------------------
def test_tokens_expire_are_listed_without_secrets_and_can_be_revoked(api):
    short = api.token("temp", "--expires-days", "0.00002")  # ~1.7 s
    assert api.call("GET", "/jobs", user="temp").status_code == 200
    time.sleep(2.5)
    assert api.call("GET", "/jobs", user="temp").status_code == 401
    token = api.token("leaver", "--name", "laptop")
    assert api.call("GET", "/jobs", user="leaver").status_code == 200
    s, csrf = login(api, "leaver")
    listed = api.call("GET", "/tokens", user="leaver").json()["tokens"]
    assert [t["name"] for t in listed] == ["laptop"] and listed[0]["last_used_at"] and listed[0]["active"]
    assert token not in json.dumps(listed) and short not in api.call("GET", "/tokens", user="root").text
    token_id = listed[0]["id"]
    assert api.call("DELETE", f"/tokens/{token_id}", user="bob").status_code == 404  # not bob's
    r = subprocess.run([sys.executable, "-m", "distillery", "token", "revoke", str(token_id)], env=api.env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert api.call("GET", "/jobs", user="leaver").status_code == 401
    assert s.get(f"{api.url}/api/v1/jobs", timeout=30).status_code == 401  # the dashboard session ends with it
    api.token("leaver2")
    other = api.call("GET", "/tokens?user=leaver2", user="root").json()["tokens"][0]
    r = api.call("DELETE", f"/tokens/{other['id']}", user="root")
    assert r.status_code == 200 and r.json()["revoked_at"] and not r.json()["active"]
    assert api.call("GET", "/jobs", user="leaver2").status_code == 401


def test_errors_do_not_show_server_paths_to_users(api):
    for train in ("/etc", "dataset:bobs-data/nope", str(api.data / "nope"), "dataset:digits-nope/train"):
        body = job(str(api.data))
        body["config"]["data"]["train"] = train
        r = api.call("POST", "/jobs", user="alice", json=body)
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert str(api.storage) not in message and str(api.root / "data") + "," not in message, message
        assert str(api.root / "data") not in message.replace(train, ""), message


# 9. What holds today, kept held ------------------------------------------------------------------------------
def test_other_users_objects_are_404_everywhere(api):
    job_id = queued_job(api, "bob")
    api.call("POST", f"/jobs/{job_id}/cancel", user="bob")
    art = api.sql("INSERT INTO artifacts (job_id, kind, format, path, size, sha256, metadata, created_at) VALUES "
                  "(:j, 'checkpoint', 'checkpoint', :p, 7, :h, '{}', now()) RETURNING id",
                  j=job_id, p=str(api.storage / "artifacts" / "1" / "checkpoint.pth"), h="0" * 64)[0][0]
    ds = api.sql("SELECT id FROM datasets WHERE name = 'bobs-data'")[0][0]
    for method, path in (("GET", f"/jobs/{job_id}"), ("GET", f"/jobs/{job_id}/metrics"), ("GET", f"/jobs/{job_id}/logs"),
                         ("POST", f"/jobs/{job_id}/cancel"), ("POST", f"/jobs/{job_id}/retry"), ("GET", f"/artifacts/{art}"),
                         ("GET", f"/artifacts/{art}/download"), ("GET", f"/datasets/{ds}")):
        r = api.call(method, path, user="alice")
        assert r.status_code == 404, (method, path, r.text)
    body = job(str(api.data))
    body["config"]["teacher"]["checkpoint"] = art
    r = api.call("POST", "/jobs", user="alice", json=body)
    assert r.status_code == 400 and r.json()["error"]["field"] == "config.teacher.checkpoint", r.text
    assert all(j["owner"] == "alice" for j in api.call("GET", "/jobs", user="alice").json()["jobs"])
    assert art not in [a["id"] for a in api.call("GET", "/artifacts", user="alice").json()["artifacts"]]


def _zip_with(name: str, data: bytes = b"x", mode: int | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train/a/0.png", png())
        info = zipfile.ZipInfo(name)
        if mode:
            info.external_attr = mode << 16
        zf.writestr(info, data)
    return buf.getvalue()


def test_traversal_and_link_members_are_refused(api):
    body = job(str(api.data))
    body["config"]["data"]["train"] = f"{api.data}/../../../etc"
    assert api.call("POST", "/jobs", user="alice", json=body).status_code == 400
    for blob in (_zip_with("../evil.png"), _zip_with("/abs.png"), _zip_with("train/a/l.png", b"/etc/passwd", 0o120777)):
        r = upload(api, "alice", "evil", blob)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_archive", r.text
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("train/a/l.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    assert upload(api, "alice", "evil", buf.getvalue(), filename="d.tar.gz").status_code == 400
    assert not (api.storage / "datasets" / "evil").exists()
