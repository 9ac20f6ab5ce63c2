"""Job subcommands of the `distillery` client: submit, jobs, watch, cancel, diff, download; and the two
small groups a first session needs around them: ``datasets upload | list`` and ``login`` / ``logout``.

They talk to a running service over HTTP (:mod:`distillery.api_client`), so they work from any machine
with the package installed and never import Flask, Celery or torch. Every failure a user can cause (a
wrong token, an unknown job, a server that is down, a rejected config) ends with one clear line on
stderr and a distinct exit code instead of a traceback. The sweep commands are
:mod:`distillery.sweep_client`; :mod:`distillery.cli` wires both into the parser.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, TextIO

from deit_core.presets import PRESET_NAMES  # plain data: no torch

# plain tuples: no Flask, Celery or torch
from server.vocabulary import ARTIFACT_FORMATS, FINAL_STATES, JOB_KINDS, PRIORITIES, SWEEP

from .api_client import (
    EXIT_API_ERROR,
    EXIT_JOB_CANCELLED,
    EXIT_JOB_FAILED,
    EXIT_OK,
    ApiClient,
    ClientError,
    guard,
    read_client_config,
    remove_client_config,
    write_client_config,
)
from .artifact_download import download_artifact, export_report
from .card_text import cpu_text, gain_line, latency_text, ship_card_text, speedup_text, state_text
from .job_files import load_job_file
from .text_format import format_age, format_duration, format_size, format_table

PAGE_SIZE = 200  # the API's largest page

# ------------------------------------------------------------------------------ progress, rows

def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def progress_fraction(job: dict[str, Any]) -> float:
    """The job's completed fraction in [0, 1]; succeeded jobs are full whatever progress says."""
    if job.get("state") == "succeeded":
        return 1.0
    p = job.get("progress") or {}
    frac = p.get("fraction")
    if not isinstance(frac, (int, float)):
        epochs, spe = p.get("epochs") or 0, p.get("steps_per_epoch") or 0
        frac = (p.get("step", 0) / (epochs * spe)) if epochs and spe else 0.0
    return min(1.0, max(0.0, float(frac)))


def format_bar(fraction: float, width: int = 24) -> str:
    full = int(round(fraction * width))
    return "#" * full + "-" * (width - full)


def sweep_line(job: dict[str, Any], width: int = 24) -> str:
    """A sweep's line: trials finished of those asked for and the best trial so far (it has no epochs)."""
    summary = job.get("sweep") or (job.get("progress") or {}).get("sweep") or {}
    best = summary.get("best") or {}
    frac = progress_fraction(job)
    best_text = f"  best trial {best.get('number')} top-1 {_num(best.get('top1'), '.2f')}" if best else ""
    return (f"sweep {job.get('id')} {state_text(job):<9} [{format_bar(frac, width)}] {frac * 100:5.1f}%  "
            f"trials {summary.get('finished', 0)}/{summary.get('trials_requested') or '-'}{best_text}")


def progress_line(job: dict[str, Any], width: int = 24) -> str:
    """One terminal line: state, bar, percent, epoch, loss, top-1, ETA (a sweep: :func:`sweep_line`)."""
    if job.get("kind") == SWEEP:
        return sweep_line(job, width)
    p = job.get("progress") or {}
    m = job.get("metrics") or {}
    frac = progress_fraction(job)
    epoch = f"{p['epoch']}/{p['epochs']}" if p.get("epochs") else "-"
    eta = "-" if job.get("state") in FINAL_STATES else format_duration(p.get("eta_s"))
    line = (f"job {job.get('id')} {state_text(job):<9} [{format_bar(frac, width)}] "
            f"{frac * 100:5.1f}%  epoch {epoch}  loss {_num(m.get('loss'), '.4f')}  "
            f"top-1 {_num(_best_top1(job), '.2f')}  ETA {eta}")
    if job.get("state") == "queued" and job.get("waiting_reason"):  # why it has not started (server.workers)
        line += f"  ({job['waiting_reason']})"
    elif job.get("state") == "queued" and job.get("parent_id"):
        line += f"  (after teacher job {job['parent_id']})"
    if job.get("state") == "running" and not p.get("step"):  # before the first step: what it is doing
        line += f"  ({p.get('phase') or 'starting processes'}"
        line += f", teacher top-1 {m['teacher_top1']:.1f})" if isinstance(m.get("teacher_top1"), (int, float)) else ")"
    return line


def outcome_lines(job: dict[str, Any]) -> list[str]:
    """What a finished job is worth, in the same words as its page: the exported checkpoint's top-1,
    a warning when that is chance level, and the distillation gain over the baseline."""
    out = []
    top1 = _best_top1(job)
    if job.get("kind") == SWEEP:  # no checkpoint of its own: its best trial's
        best = (job.get("sweep") or {}).get("best") or {}
        if best:
            out.append(f"best trial {best.get('number')} (job {best.get('job_id')}): top-1 {_num(best.get('top1'), '.1f')}% on "
                       f"the validation images; every trial: distillery sweep watch {job.get('id')}")
    elif isinstance(top1, (int, float)):
        out.append(f"top-1 {top1:.1f}% on the validation images ({job.get('top1_checkpoint') or 'final'} checkpoint, "
                   "the one exported)")
    if job.get("at_chance") and isinstance(job.get("chance_top1"), (int, float)):
        out.append(f"warning: that is chance level ({job['chance_top1']:.1f}% = guessing among "
                   f"{round(100 / job['chance_top1'])} classes): the model learned nothing; check the image size, "
                   "epochs and augmentation (distillery submit --preset small-data; the dashboard's submit page has presets too)")
    gain = gain_line(job.get("baseline"), top1)
    if gain:
        out.append(gain)
    card = ship_card_text(job.get("ship_card"))
    if card and job.get("state") == "succeeded":
        out.extend(["", "what to ship:", card])
    return out


def list_items(payload: Any) -> list[dict[str, Any]]:
    """The rows of a list response, whether it is a bare list or ``{"items"|"jobs"|...: [...]}``."""
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        for key in ("items", "jobs", "data", "results", "artifacts", "datasets"):
            if isinstance(payload.get(key), list):
                return payload[key]
    return []


def _owner(job: dict[str, Any]) -> str:
    owner = job.get("owner") or job.get("user") or job.get("owner_name") or "-"
    if isinstance(owner, dict):
        owner = owner.get("name") or owner.get("username") or owner.get("id")
    return str(owner)


# ---------------------------------------------------------------------------------------- jobs

def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(args.url, args.token)


def cmd_submit(args: argparse.Namespace) -> int:
    body = load_job_file(args.file, args.name)
    if args.priority:
        body["priority"] = args.priority
    if args.preset:
        body["preset"] = args.preset
    job = _client(args).post("/jobs", json=body, what="jobs endpoint")
    print_warnings(job.get("warnings") or [])
    pipeline = job.get("pipeline") or []
    if len(pipeline) > 1:
        print(f"submitted a pipeline: teacher job {pipeline[0]} -> {job.get('kind')} job {job['id']} {job.get('name')!r}")
    else:
        prio = f", {job['priority']} priority" if job.get("priority") not in (None, "normal") else ""
        print(f"submitted {job.get('kind')} job {job['id']} {job.get('name')!r} ({job.get('state', 'queued')}{prio})")
    if (job.get("baseline") or {}).get("job_id"):
        print(f"and baseline job {job['baseline']['job_id']}: the same student without a teacher")
    print(job["id"])
    return EXIT_OK


def print_warnings(warnings: list[dict[str, Any]], out: TextIO | None = None) -> None:
    """The 201's ``warnings`` (deit_core.config_warnings), one line each on stderr: the job was
    accepted, but its config looks wrong for its data."""
    out = out or sys.stderr
    for w in warnings:
        print(f"warning: {w.get('field')}: {w.get('message')}", file=out)


def cmd_jobs(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("state", args.state), ("kind", args.kind)) if v}
    api = _client(args)
    jobs: list[dict[str, Any]] = []
    payload: Any = None
    while len(jobs) < args.limit:  # the API serves at most 200 rows a page
        params.update(limit=min(PAGE_SIZE, args.limit - len(jobs)), offset=len(jobs))
        payload = api.get("/jobs", params=params)
        page = list_items(payload)
        jobs.extend(page)
        if not page or not isinstance(payload, dict) or payload.get("next_offset") is None:
            break
    now = time.time()
    rows = [[str(j.get("id")), str(j.get("kind", "-")), str(j.get("name", "-")), state_text(j),
             f"{progress_fraction(j) * 100:3.0f}%", _epoch(j), _num(_best_top1(j), ".2f"),
             _owner(j), format_age(j.get("created_at"), now)] for j in jobs]
    if not rows:
        print("no jobs")
        return EXIT_OK
    print(format_table(rows, ["ID", "KIND", "NAME", "STATE", "PROGRESS", "EPOCH", "TOP-1 %", "OWNER", "AGE"]))
    total = payload.get("total") if isinstance(payload, dict) else None
    if isinstance(total, int) and total > len(rows):
        print(f"({len(rows)} of {total}; --limit N for more)")
    return EXIT_OK


def _best_top1(job: dict[str, Any]) -> Any:
    """The one accuracy number: val top-1 of the exported checkpoint (the API's ``top1``)."""
    if isinstance(job.get("top1"), (int, float)):
        return job["top1"]
    return (job.get("metrics") or {}).get("val_top1")


def _epoch(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    return f"{p.get('epoch', 0)}/{p['epochs']}" if p.get("epochs") else "-"


def watch_job(client: ApiClient, job_id: int, interval: float = 1.0, out: TextIO | None = None,
              sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll one job until it reaches a terminal state, redrawing a progress line; return the job."""
    out = out or sys.stdout
    tty = out.isatty()
    last = ""
    while True:
        job = client.get(f"/jobs/{job_id}", what=f"job {job_id}")
        line = progress_line(job)
        if tty:
            out.write("\r\x1b[2K" + line)
            out.flush()
        elif line != last:
            out.write(line + "\n")
            out.flush()
        last = line
        if job.get("state") in FINAL_STATES:
            if tty:
                out.write("\n")
            return job
        sleep(interval)


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        job = watch_job(_client(args), args.id, args.interval)
    except KeyboardInterrupt:
        print("\nstopped watching (the job keeps running)", file=sys.stderr)
        return 130
    state = job.get("state")
    if state == "succeeded":
        for line in outcome_lines(job):
            print(line)
        print(f"{'sweep' if job.get('kind') == SWEEP else 'job'} {args.id} succeeded")
        return EXIT_OK
    detail = f": {job['error']}" if job.get("error") else ""
    print(f"job {args.id} {state}{detail}", file=sys.stderr)
    return EXIT_JOB_CANCELLED if state == "cancelled" else EXIT_JOB_FAILED


def cmd_cancel(args: argparse.Namespace) -> int:
    job = _client(args).post(f"/jobs/{args.id}/cancel", what=f"job {args.id}")
    state = job.get("state") if isinstance(job, dict) else None
    print(f"job {args.id}: {state or 'cancel requested'}")
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    path, sha, size = download_artifact(_client(args), args.id, args.format, args.output)
    print(f"saved {path} ({format_size(size)}), sha256 {sha} verified")
    return EXIT_OK


# ---------------------------------------------------------------------------------------- diff

def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``: the dotted names config errors use."""
    if not isinstance(config, dict):
        return {prefix: config} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(value, name) if isinstance(value, dict) and value else {name: value})
    return out


def config_diff(configs: list[dict[str, Any]]) -> tuple[list[tuple[str, list[Any]]], int]:
    """The keys whose values differ between ``configs`` (missing counts as a value) and how many agree."""
    flat = [flatten(c or {}) for c in configs]
    keys = sorted(set().union(*flat))
    differ = [(k, [f.get(k, "(absent)") for f in flat]) for k in keys if len({json.dumps(f.get(k, "(absent)"),
                                                                                       sort_keys=True) for f in flat}) > 1]
    return differ, len(keys) - len(differ)


def exported_summary(client: ApiClient, job: dict[str, Any]) -> dict[str, Any]:
    """The .ptl's top-1, p50 latency and size from the job's export report (empty when there is none)."""
    report = export_report(client, job)
    if not report:
        return {}
    ptl = (report.get("variants") or {}).get("ptl") or {}
    cmp = (report.get("latency") or {}).get("int8_vs_fp32") or {}
    return {"top1": ptl.get("top1"), "p50_ms": (ptl.get("latency_ms") or {}).get("p50"), "latency": ptl.get("latency_ms"),
            "size": ptl.get("size_bytes"), "cpu": report.get("cpu"),
            "vs_fp32_ptl": (cmp.get("same_runtime") or {}).get("lite_interpreter"),
            "vs_fp32_eager": (cmp.get("vs_fp32_eager") or {}).get("ptl")}


def cmd_diff(args: argparse.Namespace) -> int:
    """Two to six jobs side by side: the params that differ, val top-1 by epoch, the exported model."""
    if not 2 <= len(args.ids) <= 6:
        raise ClientError(f"give 2 to 6 job ids, got {len(args.ids)}", EXIT_API_ERROR)
    api = _client(args)
    jobs = [api.get(f"/jobs/{i}", what=f"job {i}") for i in args.ids]
    head = ["", *[f"job {j['id']}" for j in jobs]]
    differ, same = config_diff([j.get("config") or {} for j in jobs])
    print(f"params that differ ({same} others are the same):")
    rows = [[k, *[json.dumps(v) if not isinstance(v, str) else v for v in vals]] for k, vals in differ]
    print(format_table(rows, head) if rows else "  none")
    curves = [api.get(f"/jobs/{j['id']}/metrics", params={"name": "val_top1"}).get("series", {}).get("val_top1", [])
              for j in jobs]
    epochs = sorted({p.get("epoch") for c in curves for p in c if p.get("epoch") is not None})
    by_epoch = [{p.get("epoch"): p.get("value") for p in c} for c in curves]
    print("\nval top-1 % by epoch:")
    print(format_table([[str(e), *[_num(b.get(e), ".2f") for b in by_epoch]] for e in epochs], ["epoch", *head[1:]])
          if epochs else "  no evaluations yet")
    exported = [exported_summary(api, j) for j in jobs]
    print("\nexported .ptl:")
    print(format_table([["state", *[state_text(j) for j in jobs]],
                        ["top-1 %", *[_num(e.get("top1"), ".2f") for e in exported]],
                        ["p50 latency (p10-p90)", *[latency_text(e.get("latency")) for e in exported]],
                        ["vs its fp32 .ptl", *[speedup_text(e.get("vs_fp32_ptl")) if e else "-" for e in exported]],
                        ["vs fp32 eager", *[speedup_text(e.get("vs_fp32_eager")) if e else "-" for e in exported]],
                        ["size", *[format_size(e["size"]) if e.get("size") else "-" for e in exported]]], head))
    cpus = {cpu_text(e.get("cpu")) for e in exported if e}
    if cpus:
        print(f"latency: batch 1, measured on {'; '.join(sorted(cpus))}")
    for j in jobs:
        gain = gain_line(j.get("baseline"), _best_top1(j))
        if gain:
            print(f"\njob {j['id']}: {gain}")
        card = ship_card_text(j.get("ship_card"))
        if card:
            print(f"\njob {j['id']}, what to ship:\n{card}")
    return EXIT_OK


# ------------------------------------------------------------------------------------ datasets
# ``datasets upload PATH --name N`` / ``datasets list``: what the errors that point at POST /api/v1/datasets
# ask for, without curl. A folder is packed as a .tar.gz (its train/ and val/ at the archive's top, as the
# server unpacks it) into a temporary file; an archive file is sent as it is. The multipart body is then
# streamed from the file with its length (MultipartStream): a dataset of gigabytes never sits in memory,
# and the server can refuse an oversized one from its Content-Length.

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")


def pack_folder(src: Path, out: IO[bytes]) -> None:
    """``src``'s children (``train/``, ``val/``) at the top of a streamed ``.tar.gz`` written to ``out``."""
    if not (src / "train").is_dir():
        raise ClientError(f"{src} has no train/ folder: a dataset is an ImageFolder pair train/<class>/*, "
                          "val/<class>/*", EXIT_API_ERROR)
    with tarfile.open(fileobj=out, mode="w|gz") as tf:
        for child in sorted(src.iterdir()):
            tf.add(child, arcname=child.name)


class MultipartStream:
    """A multipart/form-data body (a ``name`` field, then ``file``) read from an open archive file in
    chunks; ``len`` tells ``requests`` the Content-Length, so nothing is chunk-encoded or buffered."""

    def __init__(self, name: str, filename: str, archive: IO[bytes]):
        self.boundary = secrets.token_hex(16)
        self.head = (f'--{self.boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'
                     f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n").encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.archive = archive
        self.len = len(self.head) + os.fstat(archive.fileno()).st_size + len(self.tail)
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self._head, self._tail = memoryview(self.head), memoryview(self.tail)

    def read(self, size: int = -1) -> bytes:
        size = self.len if size is None or size < 0 else size
        if self._head:
            out, self._head = bytes(self._head[:size]), self._head[size:]
            return out
        chunk = self.archive.read(size)
        if chunk:
            return chunk
        out, self._tail = bytes(self._tail[:size]), self._tail[size:]
        return out


def cmd_datasets_upload(args: argparse.Namespace) -> int:
    src = Path(args.path).expanduser()
    client = ApiClient(args.url, args.token, timeout=600)
    if src.is_dir():
        with tempfile.TemporaryFile() as archive:
            pack_folder(src, archive)
            archive.seek(0)
            ds = _send(client, args.name, f"{src.resolve().name}.tar.gz", archive)
    elif src.is_file() and src.name.endswith(ARCHIVE_SUFFIXES):
        with open(src, "rb") as archive:
            ds = _send(client, args.name, src.name, archive)
    else:
        raise ClientError(f"{src}: give a dataset folder (train/, val/) or a {', '.join(ARCHIVE_SUFFIXES)} file",
                          EXIT_API_ERROR)
    print(f"dataset {ds['name']!r} (id {ds['id']}): {ds.get('num_classes')} classes, {ds.get('num_train')} training and "
          f"{ds.get('num_val')} validation images; use it as data.train: dataset:{ds['name']}/train, "
          f"data.val: dataset:{ds['name']}/val")
    return EXIT_OK


def _send(client: ApiClient, name: str, filename: str, archive: IO[bytes]) -> dict:
    body = MultipartStream(name, filename, archive)
    print(f"uploading {filename} ({format_size(body.len)}) as dataset {name!r}")
    return client.post("/datasets", data=body, headers={"Content-Type": body.content_type}, what="datasets endpoint")


def cmd_datasets_list(args: argparse.Namespace) -> int:
    rows = list_items(ApiClient(args.url, args.token).get("/datasets", params={"limit": 200}, what="datasets endpoint"))
    table = [[str(d.get("id")), d.get("name", ""), str(d.get("num_classes")), str(d.get("num_train")),
              str(d.get("num_val")), d.get("source") or "", d.get("owner") or ""] for d in rows]
    print(format_table(table, ["id", "name", "classes", "train", "val", "source", "owner"]) if table else "no datasets")
    return EXIT_OK


# --------------------------------------------------------------------------------- login, logout
# The saved connection (distillery.api_client) by hand, for a service the demo did not start or a token
# made later. ``login`` checks the token against the service first, so a typo is refused before it is saved.

def cmd_login(args: argparse.Namespace) -> int:
    url = args.server.rstrip("/")
    token = args.secret.strip()
    ApiClient(url, token).get("/jobs", params={"limit": 1}, what="jobs endpoint")  # 401: ClientError, nothing saved
    saved = read_client_config()
    settings = {"url": url, "token": token}
    if saved.get("home") and saved.get("url", "").rstrip("/") == url:
        settings["home"] = saved["home"]  # the same embedded service: its state folder stays known
    path = write_client_config(settings)
    print(f"logged in to {url}; saved in {path} (mode 0600). `distillery jobs` now uses it.")
    return EXIT_OK


def cmd_logout(args: argparse.Namespace) -> int:
    path = remove_client_config()
    print(f"removed {path}" if path else "no saved login to remove")
    return EXIT_OK


# ------------------------------------------------------------------------------------ register

def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add submit, jobs, watch, cancel, diff, download, datasets, login and logout to the ``distillery``
    parser; ``common`` is :func:`distillery.api_client.connection_arguments`."""
    p = sub.add_parser("submit", parents=[common], help="submit a job file (YAML or JSON); prints the job id last")
    p.add_argument("file", help="a job body {kind, name, config} or just a config")
    p.add_argument("--name", help="job name (default: the body's name, else the file name)")
    p.add_argument("--priority", choices=list(PRIORITIES),
                   help="the broker starts higher first (default: the body's, else normal); high: admins only")
    p.add_argument("--preset", choices=list(PRESET_NAMES),
                   help="start from this preset (deit_core/presets.py, GET /api/v1/presets); keys in the file win")
    p.set_defaults(func=guard(cmd_submit))

    p = sub.add_parser("jobs", parents=[common], help="list jobs as a table")
    p.add_argument("--state", help="queued, running, exporting, succeeded, failed or cancelled (comma-separated)")
    p.add_argument("--kind", choices=list(JOB_KINDS))
    p.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    p.set_defaults(func=guard(cmd_jobs))

    p = sub.add_parser("watch", parents=[common],
                       help="live progress until the job ends; exit 0 succeeded, 1 failed, 3 cancelled")
    p.add_argument("id", type=int)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    p.set_defaults(func=guard(cmd_watch))

    p = sub.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    p.add_argument("id", type=int)
    p.set_defaults(func=guard(cmd_cancel))

    p = sub.add_parser("diff", parents=[common],
                       help="compare 2-6 jobs: params that differ, val top-1 by epoch, exported top-1/latency/size")
    p.add_argument("ids", type=int, nargs="+", metavar="ID")
    p.set_defaults(func=guard(cmd_diff))

    p = sub.add_parser("download", parents=[common], help="download an artifact and verify its sha256")
    p.add_argument("id", type=int, help="job id")
    p.add_argument("--format", required=True, choices=list(ARTIFACT_FORMATS))
    p.add_argument("--output", help="file or directory (default: the server's file name, here)")
    p.set_defaults(func=guard(cmd_download))

    p = sub.add_parser("datasets", help="upload and list datasets (ImageFolder train/ and val/)")
    dsub = p.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    q = dsub.add_parser("upload", parents=[common], help="upload a folder (packed as .tar.gz) or a .zip/.tar.gz file")
    q.add_argument("path", help="a folder with train/<class>/* and val/<class>/*, or an archive of one")
    q.add_argument("--name", required=True, help="the dataset's name (jobs use dataset:NAME/train)")
    q.set_defaults(func=guard(cmd_datasets_upload))
    q = dsub.add_parser("list", parents=[common], help="the datasets you can use, as a table")
    q.set_defaults(func=guard(cmd_datasets_list))

    p = sub.add_parser("login", help="check a token against a service and save both for the client commands "
                       "(~/.config/distillery/client.json, 0600)")
    p.add_argument("server", metavar="URL", help="the service root, e.g. http://127.0.0.1:8000")
    p.add_argument("secret", metavar="TOKEN", help="an API token (distillery token create --user NAME)")
    p.set_defaults(func=guard(cmd_login))
    p = sub.add_parser("logout", help="delete the saved URL and token")
    p.set_defaults(func=guard(cmd_logout))
