"""A digits sweep through the service: one teacher, eight DeiT students, the accuracy-latency front.

Starts ``distillery up`` in ``--workdir`` (SQLite + filesystem broker under its ./var; the state is
kept, so a second run reuses the trained teacher), writes and registers the digits ImageFolder,
trains a RegNetY-200MF teacher (once), submits a sweep over student size, distillation type,
alpha, tau, lr and epochs (32 px, patch 8; the students train on 30 images a class), follows it,
prints the trials table and the fronts, writes them to ``<workdir>/sweep-result.json`` and a
headless-Chromium screenshot of the sweep page to ``--screenshot``, then stops the service.

    nice -n 10 python benchmarks/sweep_digits.py --workdir var/sweep-digits --screenshot docs/sweep.png
    # --no-teacher-outputs: no cache-filling job first (every trial runs its teacher live)
    python benchmarks/sweep_digits.py --workdir var/sweep-digits --teacher-only   # just the teacher
    python benchmarks/sweep_digits.py --workdir var/sweep-digits --screenshot docs/sweep.png --screenshot-of 13
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distillery.sweep_client import trials_table  # noqa: E402
from server.cli import free_port  # noqa: E402
from server.demo import wait_healthy  # noqa: E402
from server.vocabulary import FINAL_STATES  # noqa: E402

# As `make demo` (server/demo.py): digits at 32 px, no flips, mild crops, no repeated augmentation.
TRAIN = {"batch_size": 32, "aa": None, "mixup": 0, "cutmix": 0, "reprob": 0, "smoothing": 0.1, "hflip": 0,
         "scale_min": 0.5, "drop_path": 0.0, "workers": 0, "warmup_epochs": 1, "lr": 1.0e-2, "log_every": 10,
         "repeated_aug": False}
DATA = {"train": "dataset:digits/train", "val": "dataset:digits/val", "img_size": 32, "crop_pct": 1.0}
# By default the students see 30 training images a class (of ~144) for 1-2 epochs without warm-up
# and are validated (and their exports measured) on 10 a class, so eight trials fit in half an hour
# on 2 busy cores (--train-per-class, --val-per-class, --epochs for more). The teacher is trained
# and validated on the whole digits splits.
TEACHER_EPOCHS = 10
SPACE = {
    "student_model": ["deit_tiny_distilled_patch16_224", "deit_small_distilled_patch16_224"],
    "distillation_type": ["hard", "soft"],
    "alpha": {"low": 0.3, "high": 0.8},
    "tau": {"low": 1.0, "high": 4.0, "log": True},
    "lr": {"low": 3.0e-3, "high": 2.0e-2, "log": True},
    "epochs": [1, 2],
}


def cli(workdir: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "distillery", *args], cwd=workdir, check=True, capture_output=True,
                          text=True).stdout


def wait(url: str, h: dict, job_id: int, proc: subprocess.Popen, every: float = 10.0, show=None) -> dict:
    last = ""
    while True:
        job = requests.get(f"{url}/api/v1/jobs/{job_id}", headers=h, timeout=30).json()
        line = show(job) if show else f"job {job_id} {job['state']} {100 * job['progress']['fraction']:.0f}%"
        if line != last:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
            last = line
        if job["state"] in FINAL_STATES:
            return job
        if proc.poll() is not None:
            raise SystemExit(f"the service stopped (exit {proc.returncode})")
        time.sleep(every)


def teacher(workdir: Path, url: str, h: dict, proc: subprocess.Popen) -> int:
    """The checkpoint artifact of the digits teacher (trained on the first run, then reused)."""
    jobs = requests.get(f"{url}/api/v1/jobs?kind=teacher&state=succeeded", headers=h, timeout=30).json()["jobs"]
    done = [j for j in jobs if j["name"] == "digits-regnety-002"]
    if not done:
        body = {"kind": "teacher", "name": "digits-regnety-002",
                "config": {"kind": "teacher", "data": DATA, "teacher": {"model": "regnety_002"},
                           "train": {**TRAIN, "epochs": TEACHER_EPOCHS}, "resources": {"processes": 2}}}
        r = requests.post(f"{url}/api/v1/jobs", json=body, headers=h, timeout=30)
        r.raise_for_status()
        job = wait(url, h, r.json()["id"], proc)
        if job["state"] != "succeeded":
            raise SystemExit(f"teacher job {job['id']} {job['state']}: {job['error']}")
        done = [job]
    job = requests.get(f"{url}/api/v1/jobs/{done[0]['id']}", headers=h, timeout=30).json()
    print(f"teacher job {job['id']}: val top-1 {job['top1']:.2f}%", flush=True)
    return next(a["id"] for a in job["artifacts"] if a["format"] == "checkpoint")


def datasets(workdir: Path, url: str, h: dict, per_class: int, val_per_class: int) -> str:
    """The digits ImageFolder (the teacher's) and the students' subset, registered as datasets;
    returns the subset's dataset name."""
    data = workdir / "var" / "digits"
    if not (data / "val").is_dir():
        cli(workdir, "demo-data", "--output", str(data))
    have = requests.get(f"{url}/api/v1/datasets", headers=h, timeout=30).json()["datasets"]
    if not any(d["name"] == "digits" for d in have):
        requests.post(f"{url}/api/v1/datasets", json={"name": "digits", "path": str(data)}, headers=h,
                      timeout=60).raise_for_status()
    small = workdir / "var" / f"digits-{per_class}-{val_per_class}"
    if not (small / "val").is_dir():
        for split, n in (("train", per_class), ("val", val_per_class)):
            for cls in sorted((data / split).iterdir()):
                (small / split / cls.name).mkdir(parents=True, exist_ok=True)
                for f in sorted(cls.iterdir())[:n]:
                    shutil.copy(f, small / split / cls.name / f.name)
    if not any(d["name"] == small.name for d in have):
        requests.post(f"{url}/api/v1/datasets", json={"name": small.name, "path": str(small)}, headers=h,
                      timeout=60).raise_for_status()
    return small.name


def screenshot(url: str, token: str, sweep_id: int, path: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("DISTILLERY_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 1280, "height": 900}, base_url=url)
        page.goto("/login")
        page.fill("#token", token)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(f"{url}/")
        page.goto(f"/sweeps/{sweep_id}")
        page.wait_for_function("Number(document.querySelector('#sweep-scatter').dataset.points) > 0")
        page.wait_for_timeout(1500)  # the progress bar's width transition
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        b.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="var/sweep-digits")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--train-per-class", type=int, default=30, help="students' training images a class (1000: all)")
    ap.add_argument("--val-per-class", type=int, default=10, help="students' validation images a class (1000: all)")
    ap.add_argument("--epochs", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2],
                    help="the epochs choices, comma-separated (default 1,2)")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--extra-workers", type=int, default=1,
                    help="`distillery worker` processes beside up's own, so `parallel` trials really run at once")
    ap.add_argument("--teacher-only", action="store_true")
    ap.add_argument("--no-teacher-outputs", action="store_true",
                    help="no teacher_outputs job first: every trial runs its teacher live")
    ap.add_argument("--screenshot", default=None, help="where to save the sweep page (PNG)")
    ap.add_argument("--screenshot-of", type=int, default=None, metavar="SWEEP_ID",
                    help="only start the service and save the page of this (finished) sweep")
    args = ap.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DISTILLERY_EXPORT_ARGS": os.environ.get("DISTILLERY_EXPORT_ARGS", "--no-pte --latency-runs 20")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(workdir / "service.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "distillery", "up", "--port", str(port)], cwd=workdir, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    extra: list[subprocess.Popen] = []
    try:
        wait_healthy(url, proc, timeout=120, log_path=workdir / "service.log")
        key = (workdir / "var" / "secret_key").read_text().strip()  # up's generated session key (server.session_key)
        for _ in range(args.extra_workers):
            extra.append(subprocess.Popen([sys.executable, "-m", "distillery", "worker", "--concurrency", "1", "--pool", "solo"],
                                          cwd=workdir, env={**env, "DISTILLERY_SECRET_KEY": key}, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        token = cli(workdir, "token", "create", "--user", "sweeper", "--admin").strip().splitlines()[-1]
        h = {"Authorization": f"Bearer {token}"}
        if args.screenshot_of:
            screenshot(url, token, args.screenshot_of, Path(args.screenshot or "sweep.png"))
            return 0
        name = datasets(workdir, url, h, args.train_per_class, args.val_per_class)
        ckpt = teacher(workdir, url, h, proc)
        if args.teacher_only:
            return 0
        data = {**DATA, "train": f"dataset:{name}/train", "val": f"dataset:{name}/val"}
        base = {"data": data, "teacher": {"model": "regnety_002", "checkpoint": ckpt},
                "student": {"model": "deit_tiny_distilled_patch16_224", "patch_size": 8},
                "distillation": {"type": "hard"}, "train": {**TRAIN, "epochs": 2, "warmup_epochs": 0},
                "resources": {"processes": 1}}
        body = {"kind": "sweep", "name": "digits-sweep", "config": base, "search_space": {**SPACE, "epochs": args.epochs},
                "trials": args.trials,
                "parallel": args.parallel, "pruner": {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 1},
                "seed": 0, "teacher_outputs": not args.no_teacher_outputs}
        r = requests.post(f"{url}/api/v1/jobs", json=body, headers=h, timeout=30)
        if r.status_code != 201:
            raise SystemExit(f"sweep refused: {r.text}")
        sweep_id = r.json()["id"]
        t0 = time.monotonic()
        job = wait(url, h, sweep_id, proc, show=lambda j: f"sweep {sweep_id} {j['state']} "
                   f"{(j.get('sweep') or {}).get('finished', 0)}/{args.trials} finished, {(j.get('sweep') or {}).get('counts')}")
        summary = requests.get(f"{url}/api/v1/jobs/{sweep_id}/trials", headers=h, timeout=30).json()
        print(f"\nsweep {sweep_id} {job['state']} in {time.monotonic() - t0:.0f} s; {job.get('error') or ''}")
        print(trials_table(summary))
        print(f"accuracy-latency front (job ids): {summary['fronts']['latency']}")
        print(f"accuracy-size front (job ids):    {summary['fronts']['size']}")
        (workdir / "sweep-result.json").write_text(json.dumps({"sweep": job, "summary": summary}, indent=2))
        if args.screenshot:
            screenshot(url, token, sweep_id, Path(args.screenshot))
            print(f"screenshot: {args.screenshot}")
        return 0 if job["state"] == "succeeded" else 1
    finally:
        for p in [*extra, proc]:
            p.send_signal(signal.SIGTERM)
        for p in extra:
            p.wait(timeout=120)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
