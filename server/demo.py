"""`make demo`: the whole service on one machine, end to end, in a few minutes on 2 CPU cores.

Starts ``distillery up`` (API + one worker, SQLite + filesystem broker under ./var) on a free
port, creates an admin token, writes the digits ImageFolder, registers it as a dataset, submits a
teacher->distill pipeline (RegNetY-200MF teacher, DeiT-Tiny student at 32x32 with 8x8 patches),
prints progress, downloads the distilled int8 ``.ptl``, checks its sha256 and loads it in the Lite
Interpreter. The service is left running so the dashboard can be browsed; the last lines say how
to stop it.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from server.cli import free_port

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


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"distillery up exited with {proc.returncode}; see {DEMO / 'service.log'}")
        try:
            if requests.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the service did not become healthy in {timeout:.0f}s; see {DEMO / 'service.log'}")


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

    common = {"data": {"train": "dataset:digits/train", "val": "dataset:digits/val", "img_size": 32},
              "resources": {"processes": 2}}
    body = {
        "kind": "distill", "name": "digits-deit-tiny",
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
    print(f"[demo] submitted teacher job {teacher_id} -> distill job {distill_id}", flush=True)

    last = None
    while True:
        jobs = [requests.get(f"{url}/api/v1/jobs/{i}", headers=h, timeout=10).json() for i in (teacher_id, distill_id)]
        line = "  ".join(
            f"job {j['id']} {j['kind']:7s} {j['state']:9s} {100 * j['progress']['fraction']:5.1f}%"
            + (f" epoch {j['progress']['epoch']}/{j['progress']['epochs']}" if j["progress"]["epoch"] else "")
            + (f" val_top1 {j['metrics']['val_top1']:.1f}" if "val_top1" in j["metrics"] else "")
            for j in jobs)
        if line != last:
            print(f"[demo] {line}", flush=True)
            last = line
        if jobs[1]["state"] in ("succeeded", "failed", "cancelled"):
            break
        if proc.poll() is not None:
            raise SystemExit(f"the service stopped (exit {proc.returncode}); see {DEMO / 'service.log'}")
        time.sleep(2)
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
    teacher = requests.get(f"{url}/api/v1/jobs/{teacher_id}", headers=h, timeout=10).json()
    print(f"[demo] teacher val top-1 {teacher['metrics'].get('val_top1', 0):.1f}%, distilled student val top-1 "
          f"{job['metrics'].get('val_top1', 0):.1f}% (fp32), .ptl {ptl['size'] / 1e6:.1f} MB, output {tuple(out.shape)}")
    print(f"[demo] dashboard: {url}/   (admin token: {token})")
    print(f"[demo] verified .ptl (sha256 {digest[:16]}...): {dest.resolve()}")
    print(f"[demo] the service keeps running (pid {proc.pid}); stop it with: kill {proc.pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
