"""Waiting, once: for a condition, for a service to answer its health check, for a job to end.

Every live-service test (service, embedded, browser, client) polls through these, so a timeout
always fails with the same kind of message: what was awaited, for how long, and the last state.
"""
from __future__ import annotations

import subprocess
import time
from typing import Any, Callable

import requests

from server.vocabulary import FINAL_STATES


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.3,
               describe: Callable[[], str] | None = None) -> Any:
    """Call ``check`` until it returns something truthy; return that. Fail after ``timeout`` s,
    naming ``what`` (and ``describe()``, e.g. a log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120,
                 describe: Callable[[], str] | None = None) -> None:
    """Until ``url`` answers 200; fails at once if ``proc`` (the service) exits."""

    def healthy() -> bool:
        if proc.poll() is not None:
            extra = f"\n{describe()}" if describe else ""
            raise AssertionError(f"the service exited with {proc.returncode} before {url} was healthy{extra}")
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(healthy, timeout, f"{url} to answer 200", describe=describe)


def wait_for_job(fetch: Callable[[int], dict], job_id: int, states=FINAL_STATES, timeout: float = 420,
                 on_poll: Callable[[dict], Any] | None = None, interval: float = 0.3,
                 describe: Callable[[], str] | None = None) -> dict:
    """Poll ``fetch(job_id)`` until the job is in one of ``states``. A job that ends in another
    final state fails at once with its error (no point waiting for the timeout)."""
    last: dict = {}

    def reached():
        nonlocal last
        last = fetch(job_id)
        if on_poll:
            on_poll(last)
        if last["state"] in states:
            return last
        if last["state"] in FINAL_STATES:
            extra = f"\n{describe()}" if describe else ""
            raise AssertionError(f"job {job_id} ended {last['state']} (wanted {states}): {last.get('error')}{extra}")
        return None

    return wait_until(reached, timeout, f"job {job_id} to be {'/'.join(states)}", interval,
                      describe=lambda: f"last seen: {last.get('state')}" + (f"\n{describe()}" if describe else ""))


# ------------------------------------------------------------------------------------ job configs
# The DeiT recipe switched off for runs of seconds on 2 cores: no RandAugment, mixup, cutmix or
# random erasing, no warmup, data loaded in the training process. Each suite adds its batch size,
# lr and logging on top.
TINY_RECIPE = {"aa": None, "mixup": 0, "cutmix": 0, "reprob": 0, "workers": 0, "warmup_epochs": 0}
STUDENT = {"model": "deit_tiny_distilled_patch16_224", "patch_size": 8}  # DeiT-Ti with 8 px patches at 32 px
TEACHER = "regnety_002"


def job_config(kind: str, data: str, train: dict, processes: int | None = None, distillation: str = "hard",
               checkpoint=None) -> dict:
    """A teacher or distill config on the digits ImageFolder at ``data`` (a folder, or ``dataset:NAME``),
    at 32 px; ``checkpoint`` (a teacher's ``final/``, an artifact id or None) only for distill."""
    cfg = {"kind": kind, "data": {"train": f"{data}/train", "val": f"{data}/val", "img_size": 32},
           "teacher": {"model": TEACHER}, "train": dict(train)}
    if kind == "distill":
        cfg["student"] = dict(STUDENT)
        cfg["distillation"] = {"type": distillation}
        if checkpoint is not None:
            cfg["teacher"]["checkpoint"] = checkpoint
    if processes is not None:
        cfg["resources"] = {"processes": processes}
    return cfg


class RestClient:
    """The REST calls a live-stack fixture makes, as the token's user. The class using it has
    ``url``, ``token`` and ``logs()`` (what a timed-out wait prints)."""

    url: str
    token: str
    api_timeout: float = 30
    wait_timeout: float = 300

    def logs(self) -> str:
        return ""

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, f"{self.url}/api/v1{path}", headers={"Authorization": f"Bearer {self.token}"},
                                timeout=self.api_timeout, **kw)

    def submit(self, name: str, config: dict) -> int:
        r = self.api("POST", "/jobs", json={"kind": config["kind"], "name": name, "config": config})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def job(self, job_id: int) -> dict:
        r = self.api("GET", f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: int, states=("succeeded",), timeout: float | None = None, on_poll=None) -> dict:
        return wait_for_job(self.job, job_id, states, timeout or self.wait_timeout, on_poll, describe=self.logs)


# torchrun's failure summary as it ends a run's output.log: rank 1 killed (or exited) first, rank 0 after it
_TORCHRUN_SUMMARY = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
deit_core.train FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-26_23:43:34
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 100)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-26_23:43:34
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : {code} (pid: 101){sig}
  error_file: <N/A>
  traceback : {tb}
============================================================
"""


def torchrun_summary(code: int = -9, sig: str = "  (SIGKILL)", tb: str = "Signal 9 (SIGKILL) received by PID 101") -> str:
    """The summary with rank 1's exit code, signal suffix and traceback line filled in."""
    return _TORCHRUN_SUMMARY.format(code=code, sig=sig, tb=tb)


def migrated_database(url: str):
    """A :class:`server.db.Database` on ``url`` migrated to the newest revision, holding the user alice (id 1)."""
    from server.db import Database
    from server.migrate import upgrade
    from server.models import User

    upgrade(url)
    database = Database(url)
    with database.session() as s:
        s.add(User(name="alice"))
    return database
