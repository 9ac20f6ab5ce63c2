"""docker-compose.yml, run for real: ``compose --profile cpu up`` (PostgreSQL, Redis, the one-shot
``distillery db upgrade``, the API, a CPU worker), a token made in the API container, a dataset
uploaded and a small teacher job run through the published port, its ``.ptl`` downloaded and its
sha256 compared with the artifact row's; ``compose down -v`` at the end.

Needs a Docker daemon, compose (``docker compose`` or ``docker-compose``) and the base images
present locally: the official ones, or the stand-ins of scripts/build-standin-images.sh selected
by the variables it prints (DISTILLERY_PYTHON_IMAGE, _POSTGRES_IMAGE, _REDIS_IMAGE). Otherwise the
test is skipped, naming what is missing. The first run builds the app image (minutes); later runs
reuse Docker's cache. Everything is private to the run: its own compose project (network and
volumes), image tag and port, the API published on 127.0.0.1 only.
"""
from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import requests

from server.cli import free_port
from tests.helpers import RestClient, wait_until
from tests.service.conftest import teacher_config, write_digits

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {"DISTILLERY_PYTHON_IMAGE": "python:3.11-slim", "DISTILLERY_POSTGRES_IMAGE": "postgres:16",
          "DISTILLERY_REDIS_IMAGE": "redis:7"}
BUILD_TIMEOUT_S = 1800
JOB_TIMEOUT_S = 900


def compose_command() -> list[str] | None:
    """``docker compose`` (v2) where the plugin answers, else ``docker-compose`` (v1), else None."""
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "version"], capture_output=True).returncode == 0:
            return cmd
    return None


def missing_prerequisite() -> str | None:
    """Why this machine cannot run the test, or None."""
    if not shutil.which("docker"):
        return "no docker client on PATH"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        return f"no Docker daemon answers: {info.stderr.strip()[-200:]}"
    if compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed"
    for var, default in IMAGES.items():
        image = os.environ.get(var, default)
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
            return (f"image {image} ({var}) is not present locally; pull it, or build stand-ins with "
                    "scripts/build-standin-images.sh and export the variables it prints")
    return None


class Compose(RestClient):
    """One compose project: its commands, its published API and the token's REST calls."""

    wait_timeout = JOB_TIMEOUT_S

    def __init__(self, cmd: list[str], project: str, env: dict, url: str):
        self.cmd, self.project, self.env, self.url, self.token = cmd, project, env, url, ""
        self.timings: dict[str, float] = {}
        self.job_id: int | None = None

    def submit(self, name: str, config: dict) -> int:
        self.job_id = super().submit(name, config)
        return self.job_id

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([*self.cmd, "-p", self.project, "--profile", "cpu", *args], cwd=ROOT, env=self.env,
                             capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}\n"
                                 f"{out.stderr[-3000:]}\n{self.logs()}")
        return out

    def logs(self) -> str:
        out = subprocess.run([*self.cmd, "-p", self.project, "--profile", "cpu", "logs", "--no-color", "--tail", "40"],
                             cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        run = ""
        if self.job_id is not None:  # the run's own output.log, where a training error is
            r = self.api("GET", f"/jobs/{self.job_id}/logs?tail=40")
            run = "\n".join(r.json().get("lines", [])) if r.ok else r.text
        return f"{out.stdout[-6000:]}\n--- job {self.job_id} log ---\n{run}"

    def exit_code(self, service: str) -> int:
        """The exit code of the service's (only) container."""
        container = self.run("ps", "-a", "-q", service).stdout.split()[-1]
        inspect = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}} {{.State.Status}}", container],
                                 capture_output=True, text=True, check=True)
        code, status = inspect.stdout.split()
        assert status == "exited", f"{service} is {status}, not exited"
        return int(code)


def digits_archive(tmp_path: Path) -> bytes:
    """The small digits ImageFolder (train/, val/) as a .tar.gz for POST /datasets."""
    folder = write_digits(tmp_path / "digits", per_class_train=20, per_class_val=5)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for split in ("train", "val"):
            tar.add(folder / split, arcname=split)
    return buf.getvalue()


def healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/v1/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def volumes_of(project: str) -> list[str]:
    out = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.fixture
def compose(tmp_path):
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    project = f"distillery-test-{secrets.token_hex(4)}"
    port = free_port()
    env = {**os.environ, "DISTILLERY_SECRET_KEY": secrets.token_hex(32), "DISTILLERY_API_PORT": str(port),
           "DISTILLERY_IMAGE": "distillery:compose-test", "DISTILLERY_EXPORT_ARGS": "--no-pte --latency-runs 3"}
    stack = Compose(compose_command(), project, env, f"http://127.0.0.1:{port}")
    started = time.monotonic()
    stack.run("build", timeout=BUILD_TIMEOUT_S)
    stack.timings["build_s"] = time.monotonic() - started
    try:
        yield stack
    finally:
        stack.run("down", "-v", "--remove-orphans", timeout=180, check=False)
        assert volumes_of(project) == [], "compose down -v left the project's volumes behind"


def test_compose_up_runs_a_job_and_serves_its_ptl(compose, tmp_path):
    started = time.monotonic()
    compose.run("up", "-d", "--no-build", timeout=600)
    # `up -d` returns once the api and worker started, which waited for migrate to finish: db upgrade ran
    assert compose.exit_code("migrate") == 0
    assert "database at head" in compose.run("logs", "--no-color", "migrate").stdout
    published = compose.run("port", "api", "8000").stdout.strip()
    assert published.startswith("127.0.0.1:"), f"the API must be published on 127.0.0.1 only, not {published}"
    wait_until(lambda: healthy(compose.url), 120, "the API's health check", describe=compose.logs)
    up_s = time.monotonic() - started

    compose.token = compose.run("exec", "-T", "api", "distillery", "token", "create", "--user", "me",
                                "--admin").stdout.strip().splitlines()[-1]
    r = compose.api("POST", "/datasets", files={"file": ("digits.tar.gz", digits_archive(tmp_path))},
                    data={"name": "digits"})
    assert r.status_code == 201, r.text

    cfg = teacher_config("dataset:digits", epochs=1)
    cfg["resources"]["processes"] = 1
    started = time.monotonic()
    job = compose.wait(compose.submit("compose", cfg))
    job_s = time.monotonic() - started

    ptl = next(a for a in job["artifacts"] if a["format"] == "ptl")
    r = compose.api("GET", f"/artifacts/{ptl['id']}/download")
    assert r.status_code == 200, r.text
    assert len(r.content) == ptl["size"] > 0
    assert hashlib.sha256(r.content).hexdigest() == ptl["sha256"]
    print(f"compose timings: build {compose.timings['build_s']:.0f}s, up to healthy {up_s:.0f}s, "
          f"teacher job {job_s:.0f}s ({' '.join(compose.cmd)})")

