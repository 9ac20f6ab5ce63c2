"""Issue 19, item 6, on production-shaped services: the bad-token limit counted in the deployment's
Redis (shared by every API process), and no server path in anything a non-admin reads about a job
that really ran (gunicorn, a Celery worker, PostgreSQL, Redis: ``tests.faults.conftest.make_stack``, its
own database and Redis, so its worker never meets the jobs of ``conftest.api``, which must stay queued)."""
from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import pytest
import redis
import requests

from server.cli import free_port
from server.vocabulary import FINAL_STATES
from tests.faults.conftest import job_config, make_stack, private_pg, private_redis  # noqa: F401  (fixtures)
from tests.helpers import wait_healthy
from tests.service.conftest import new_token, stop

from .test_access import strings

pytestmark = pytest.mark.integration
BAD_TOKENS = 5


@pytest.fixture
def limited(api):
    """A second API (two gunicorn workers) on the security fixture's database and Redis, with a low
    bad-token limit and its own queue name, so its counts never touch the shared API's."""
    queue = api.env["DISTILLERY_QUEUE"] + "-limits"
    env = {**api.env, "DISTILLERY_BAD_TOKEN_LIMIT": f"{BAD_TOKENS}/minute", "DISTILLERY_QUEUE": queue}
    port = free_port()
    log = api.root / "limited.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "distillery", "serve", "--port", str(port), "--workers", "2"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api/v1/health", proc, timeout=90,
                     describe=lambda: log.read_text(errors="replace")[-3000:])
        yield f"http://127.0.0.1:{port}", queue
    finally:
        stop(proc)


def test_bad_tokens_are_counted_in_redis_across_api_processes(api, limited):
    url, queue = limited
    bad, good = {"Authorization": "Bearer dst_not-a-token"}, api.h("alice")
    codes = [requests.get(f"{url}/api/v1/jobs", headers=bad, timeout=30).status_code for _ in range(BAD_TOKENS + 1)]
    assert codes == [401] * BAD_TOKENS + [429], codes  # two processes, one count: it lives in Redis
    r = requests.get(f"{url}/api/v1/jobs", headers=bad, timeout=30)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0 and r.json()["error"]["code"] == "too_many_requests"
    for _ in range(20):
        assert requests.get(f"{url}/api/v1/jobs", headers=good, timeout=30).status_code == 200
    client = redis.Redis.from_url(api.env["DISTILLERY_BROKER_URL"])
    try:
        assert list(client.scan_iter(f"*{queue}*bad_token*")), "no rate-limit key in Redis"
    finally:
        client.close()


def _zip_folder(folder) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.rglob("*.png")):
            zf.write(f, f.relative_to(folder).as_posix())
    return buf.getvalue()


@pytest.mark.slow
def test_no_server_path_reaches_a_non_admin_about_a_job_that_ran(make_stack, private_redis, small_digits):  # noqa: F811
    stack = make_stack(private_redis.url)
    stack.start_api()
    stack.start_worker()
    root = {"Authorization": f"Bearer {new_token('root', stack.env, admin=True)}"}
    storage = str((stack.root / "storage").resolve())
    r = stack.api("POST", "/datasets", data={"name": "paths-digits"}, files={"file": ("d.zip", _zip_folder(small_digits))})
    assert r.status_code == 201, r.text
    dataset = r.json()
    job = stack.wait(stack.submit("paths", job_config("dataset:paths-digits", epochs=1)), states=FINAL_STATES, timeout=900)
    assert job["state"] == "succeeded", (job["error"], stack.logs())
    logs = f"/jobs/{job['id']}/logs?tail=10000"
    reads = {}
    for path in ("/jobs", f"/jobs/{job['id']}", logs, f"/jobs/{job['id']}/metrics", "/artifacts",
                 f"/artifacts/{job['artifacts'][0]['id']}", "/datasets", f"/datasets/{dataset['id']}"):
        reads[path] = stack.api("GET", path).json()
        leaks = [s for s in strings(reads[path]) if storage in s or sys.prefix in s]  # sys.prefix: the runs' venv
        assert not leaks, (path, leaks[:5])
    assert reads[f"/jobs/{job['id']}"]["config"]["data"]["train"] == "dataset:paths-digits/train"
    assert any("<storage>/" in line for line in reads[logs]["lines"]), reads[logs]["lines"][:20]  # the command line
    # An admin sees the same answers with the server's paths.
    admin = {p: requests.get(f"{stack.url}/api/v1{p}", headers=root, timeout=30).json() for p in (f"/jobs/{job['id']}", logs)}
    assert admin[f"/jobs/{job['id']}"]["config"]["data"]["train"].startswith(storage)
    assert any(storage in line for line in admin[logs]["lines"])
