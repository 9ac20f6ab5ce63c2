"""`make demo`: the whole service on one machine, end to end, in a few minutes on 2 CPU cores.

Starts ``distillery up`` (API + one worker, SQLite + filesystem broker under ./var) on a free
port, creates an admin token, writes the digits ImageFolder, registers it as a dataset, submits a
teacher->distill pipeline (RegNetY-200MF teacher, DeiT-Tiny student at 32x32 with 8x8 patches),
with a baseline (the same student without a teacher), prints one updating progress line, downloads the
distilled int8 ``.ptl``, checks its sha256 and loads it in the Lite Interpreter. The service is left
running so the dashboard can be browsed; the last lines are the two ``export DISTILLERY_URL=...
DISTILLERY_TOKEN=...`` lines that make the command-line client work right away.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests

from server.cli import free_port
from server.vocabulary import FINAL_STATES

VAR = Path("var")
DEMO = VAR / "demo"
# Digits at 32x32: no flips (a flipped 2 is not a 2), mild crops; lr is for a global batch of 512
# (the engine scales it), as in the DeiT recipe. Repeated augmentation is off: on 1,437 images and a
# few epochs it would show each process a third of the data per epoch.
TRAIN = {"batch_size": 32, "aa": None, "mixup": 0, "cutmix": 0, "reprob": 0, "smoothing": 0.1, "hflip": 0,
         "scale_min": 0.5, "drop_path": 0.0, "workers": 0, "warmup_epochs": 1, "lr": 1.0e-2, "log_every": 5,
         "repeated_aug": False}
TEACHER_EPOCHS, STUDENT_EPOCHS, STUDENT_LR = 12, 15, 2.0e-3


def run(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "distillery", *args], check=True, capture_output=True, text=True)
    return out.stdout


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120, log_path: Path = DEMO / "service.log") -> None:
    """Until the service at ``url`` answers its health check; exits naming ``log_path`` if ``proc``
    (``distillery up``) stops or the check never passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"distillery up exited with {proc.returncode}; see {log_path}")
        try:
            if requests.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the service did not become healthy in {timeout:.0f}s; see {log_path}")


def pct(job: dict) -> str:
    top1 = job.get("top1")
    return f"{top1:.1f}%" if isinstance(top1, (int, float)) else "-"


def status(jobs: list[dict]) -> str:
    """One line for all the demo's jobs: kind, state, percent, epoch, top-1 (or what it is doing)."""
    parts = []
    for j in jobs:
        p, m = j["progress"], j["metrics"]
        name = "baseline" if j.get("baseline_of") else j["kind"]
        part = f"{name} #{j['id']} {j['state']} {100 * p['fraction']:3.0f}%"
        if p.get("epoch"):
            part += f" ep {p['epoch']}/{p['epochs']}"
        elif j["state"] == "running":
            part += f" ({p.get('phase') or 'starting'})"
        if isinstance(j.get("top1"), (int, float)):
            part += f" top-1 {j['top1']:.1f}"
        elif isinstance(m.get("teacher_top1"), (int, float)):
            part += f" teacher {m['teacher_top1']:.1f}"
        parts.append(part)
    return " | ".join(parts)


def follow(url: str, h: dict, ids: list[int], proc: subprocess.Popen) -> list[dict]:
    """Until every job has ended: one updating line on a terminal, a line per change when piped."""
    tty, last = sys.stdout.isatty(), None
    while True:
        jobs = [requests.get(f"{url}/api/v1/jobs/{i}", headers=h, timeout=10).json() for i in ids]
        line = f"[demo] {status(jobs)}"
        if line != last:
            if tty:
                width = shutil.get_terminal_size((120, 20)).columns
                sys.stdout.write("\r\x1b[2K" + line[: width - 1])
            else:
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
            last = line
        if all(j["state"] in FINAL_STATES for j in jobs):
            if tty:
                sys.stdout.write("\n")
            return jobs
        if proc.poll() is not None:
            raise SystemExit(f"\nthe service stopped (exit {proc.returncode}); see {DEMO / 'service.log'}")
        time.sleep(2)


def main() -> int:
    DEMO.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    env.setdefault("DISTILLERY_EXPORT_ARGS", "--no-pte --latency-runs 10")  # a quicker export for the demo
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(DEMO / "service.log", "ab")
    print(f"[demo] starting the service: distillery up --port {port} (log: {DEMO / 'service.log'})", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "distillery", "up", "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    wait_healthy(url, proc)
    token = run("token", "create", "--user", "demo", "--admin").strip().splitlines()[-1]
    h = {"Authorization": f"Bearer {token}"}

    data = DEMO / "digits"
    if not (data / "val").is_dir():
        print("[demo] writing the digits dataset", flush=True)
        run("demo-data", "--output", str(data))
    datasets = requests.get(f"{url}/api/v1/datasets", headers=h, timeout=10).json()["datasets"]
    if not any(d["name"] == "digits" for d in datasets):
        r = requests.post(f"{url}/api/v1/datasets", json={"name": "digits", "path": str(data)}, headers=h, timeout=60)
        r.raise_for_status()
    print("[demo] dataset 'digits' registered", flush=True)

    common = {"data": {"train": "dataset:digits/train", "val": "dataset:digits/val", "img_size": 32, "crop_pct": 1.0},
              "resources": {"processes": 2}}
    body = {
        "kind": "distill", "name": "digits-deit-tiny", "baseline": True,
        "config": {**common, "student": {"model": "deit_tiny_distilled_patch16_224", "patch_size": 8},
                   "teacher": {"model": "regnety_002"}, "distillation": {"type": "hard"},
                   "train": {**TRAIN, "epochs": STUDENT_EPOCHS, "lr": STUDENT_LR}},
        "teacher_job": {"name": "digits-regnety-002",
                        "config": {**common, "teacher": {"model": "regnety_002"}, "train": {**TRAIN, "epochs": TEACHER_EPOCHS}}},
    }
    r = requests.post(f"{url}/api/v1/jobs", json=body, headers=h, timeout=30)
    if r.status_code != 201:
        raise SystemExit(f"submit failed: {r.status_code} {r.text}")
    teacher_id, distill_id = r.json()["pipeline"]
    baseline_id = r.json()["baseline"]["job_id"]
    print(f"[demo] submitted teacher job {teacher_id} -> distill job {distill_id}, and baseline job {baseline_id} "
          "(the same student without a teacher)", flush=True)

    jobs = follow(url, h, [teacher_id, distill_id, baseline_id], proc)
    job = jobs[1]
    if job["state"] != "succeeded":
        raise SystemExit(f"[demo] job {job['id']} {job['state']}: {job['error']}")

    ptl = next(a for a in job["artifacts"] if a["format"] == "ptl")
    dest = DEMO / f"job{job['id']}-model.ptl"
    with requests.get(f"{url}{ptl['download_url']}", headers=h, stream=True, timeout=60) as resp:
        resp.raise_for_status()
        with open(dest, "wb") as f:
            for chunk in resp.iter_content(1 << 20):
                f.write(chunk)
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    if digest != ptl["sha256"]:
        raise SystemExit(f"[demo] sha256 mismatch: {digest} != {ptl['sha256']}")
    import torch
    from torch.jit.mobile import _load_for_lite_interpreter

    model = _load_for_lite_interpreter(str(dest))
    out = model(torch.rand(1, 3, 32, 32))
    teacher, baseline = jobs[0], jobs[2]
    gain = (job.get("baseline") or {}).get("gain")
    print(f"[demo] val top-1 (final checkpoint, the one exported): teacher {pct(teacher)}, distilled student {pct(job)}, "
          f"student without a teacher {pct(baseline)}"
          + (f" -> distillation gain {gain:+.1f} pt" if isinstance(gain, (int, float)) else ""))
    print(f"[demo] .ptl {ptl['size'] / 1e6:.1f} MB, loaded in the Lite Interpreter, output {tuple(out.shape)}; "
          f"verified sha256 {digest[:16]}...: {dest.resolve()}")
    print(f"[demo] dashboard: {url}/jobs/{job['id']}   (log in with the token below)")
    print(f"[demo] the service keeps running (pid {proc.pid}); stop it with: kill {proc.pid}")
    print("[demo] for the command-line client (distillery jobs, watch, diff, download), paste:")
    print(f"export DISTILLERY_URL={url}")
    print(f"export DISTILLERY_TOKEN={token}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
