"""A live distillery for the client and browser tests: `distillery up` (API + a real worker) in a
temporary working directory, a token, a small digits dataset and one tiny teacher job.

Everything goes through the public surface (the console commands and the REST API), exactly as a
user would drive it, so these tests check the pieces fit: CLI -> API -> database -> Celery -> the
training engine -> export -> artifacts -> dashboard.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from server.cli import free_port
from server.vocabulary import FINAL_STATES
from tests.conftest import small_imagefolder
from tests.helpers import TINY_RECIPE, job_config, wait_for_job, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM = os.environ.get("DISTILLERY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# The smallest real run: 12 train / 5 val images per class at 32 px, one epoch of batch 16.
QUICK_TRAIN = {**TINY_RECIPE, "epochs": 1, "batch_size": 16, "lr": 1.0e-3, "smoothing": 0, "log_every": 1}


# Issue 20: at 390 px no element may reach past the page's edges, unless it sits in a box that scrolls
# sideways on its own (a wide comparison table); and no text may be set to break words mid-word.
_PHONE_OVERFLOW_JS = """() => {
  const W = document.documentElement.clientWidth;
  const scrollsInBox = (e) => { for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
    const ox = getComputedStyle(a).overflowX; if (ox === 'auto' || ox === 'scroll') return true; } return false; };
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (!r.width && !r.height) continue;
    const cls = typeof el.className === 'string' && el.className.trim() ? '.' + el.className.trim().split(/\\s+/).join('.') : '';
    const name = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + cls;
    if ((r.right > W + 1 || r.left < -1) && !scrollsInBox(el)) {
      out.push(`${name} spans ${Math.round(r.left)}..${Math.round(r.right)} px`);
    }
    const wb = getComputedStyle(el).wordBreak;
    if (wb === 'break-all' || wb === 'break-word') out.push(`${name} has word-break: ${wb}`);
  }
  return {width: W, scrollWidth: document.documentElement.scrollWidth, problems: out.slice(0, 12)};
}"""


def phone_layout_problems(page) -> list[str]:
    """What on the page does not fit a phone (``page`` set to 390 px): see _PHONE_OVERFLOW_JS."""
    found = page.evaluate(_PHONE_OVERFLOW_JS)
    extra = [f"the page scrolls sideways ({found['scrollWidth']} px)"] if found["scrollWidth"] > found["width"] + 2 else []
    return extra + found["problems"]


@dataclass
class Live:
    """Handle on the running service."""

    url: str
    token: str
    workdir: Path
    env: dict[str, str]
    dataset: str
    proc: subprocess.Popen

    def cli(self, *args: str, token: str | None = None, url: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``distillery ARGS`` as a user would, with the server and token in the environment."""
        env = dict(self.env, DISTILLERY_URL=url or self.url, DISTILLERY_TOKEN=token or self.token)
        return subprocess.run([sys.executable, "-m", "distillery", *args], cwd=self.workdir, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kwargs)

    def job(self, job_id: int) -> dict[str, Any]:
        resp = self.api("GET", f"/jobs/{job_id}")
        resp.raise_for_status()
        return resp.json()

    def wait(self, job_id: int, states: tuple[str, ...] = FINAL_STATES, timeout: float = 420) -> dict[str, Any]:
        """Poll until the job is in one of ``states``; fail with the server log tail otherwise."""
        return wait_for_job(self.job, job_id, states, timeout, interval=1.0,
                            describe=lambda: f"--- server log tail ---\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        path = self.workdir / "up.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def write_job_file(self, name: str, body: dict[str, Any]) -> Path:
        path = self.workdir / name
        path.write_text(json.dumps(body, indent=2))
        return path


def teacher_config(dataset: str, **train: Any) -> dict[str, Any]:
    return job_config("teacher", f"dataset:{dataset}", {**QUICK_TRAIN, **train})


@pytest.fixture(scope="session")
def live(tmp_path_factory) -> Live:
    """`distillery up` on a free port in a fresh directory (SQLite + filesystem broker under ./var)."""
    workdir = tmp_path_factory.mktemp("live")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    # The .pte (ExecuTorch) export of a DeiT takes minutes on 2 cores and is tested in tests/test_export.py;
    # here the report, downloads and pages need the .ptl only (as `make demo`).
    env.update(PYTHONUNBUFFERED="1", DISTILLERY_SECRET_KEY=secrets.token_hex(16),
               DISTILLERY_QUEUE=f"test-{secrets.token_hex(4)}", DISTILLERY_EXPORT_ARGS="--no-pte --latency-runs 10")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(workdir / "up.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "distillery", "up", "--port", str(port)], cwd=workdir, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    live = Live(url=url, token="", workdir=workdir, env=env, dataset="digits", proc=proc)
    try:
        wait_healthy(f"{url}/api/v1/health", proc, timeout=120, describe=live.log_tail)

        out = subprocess.run([sys.executable, "-m", "distillery", "token", "create", "--user", "alice"], cwd=workdir,
                             env=env, capture_output=True, text=True, timeout=60, check=True)
        live.token = out.stdout.strip().splitlines()[-1]
        subprocess.run([sys.executable, "-m", "distillery", "demo-data", "--output", "var/digits-full"], cwd=workdir,
                       env=env, capture_output=True, text=True, timeout=120, check=True)
        data = small_imagefolder(workdir / "var/digits-full", workdir / "var/digits", {"train": 12, "val": 5})
        resp = live.api("POST", "/datasets", json={"name": live.dataset, "path": str(data)})
        assert resp.status_code == 201, resp.text
        yield live
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # `up` stops its worker and the worker its runs
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(workdir / "up.log", ARTIFACTS / "live-server.log")


@pytest.fixture(scope="session")
def teacher_job(live) -> tuple[int, subprocess.CompletedProcess]:
    """One tiny teacher job submitted with `distillery submit` (a bare config + --name); (id, process)."""
    path = live.write_job_file("teacher.json", teacher_config(live.dataset))
    proc = live.cli("submit", str(path), "--name", "digits-teacher")
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip().splitlines()[-1]), proc


@pytest.fixture(scope="session")
def finished_teacher(live, teacher_job) -> dict[str, Any]:
    """The teacher job once it succeeded (trained, exported, artifacts registered)."""
    return live.wait(teacher_job[0], ("succeeded",))
