"""``distillery sweep submit | watch | download``: a sweep from a terminal (REST only, through
:mod:`distillery.api_client`, like the job commands in :mod:`distillery.client`).

``submit`` sends a YAML/JSON file holding the sweep body (``name``, ``config`` (the base distill
config), ``search_space``, ``trials``, ``parallel``, ``pruner``...; ``kind: sweep`` is implied).
``watch`` prints the trials table whenever it changes until the sweep ends. ``download --front``
fetches every ``.ptl`` on the accuracy-latency (or ``--by size``) front, each sha256-checked and
written atomically (:func:`distillery.artifact_download.download_artifact`); ``--promoted`` fetches the promoted one.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from deit_core.presets import PRESET_NAMES
from server.vocabulary import CANCELLED, FINAL_STATES, SUCCEEDED

from .api_client import EXIT_JOB_CANCELLED, EXIT_JOB_FAILED, EXIT_NOT_FOUND, EXIT_OK, ApiClient, ClientError, guard
from .artifact_download import download_artifact
from .card_text import cpu_text, latency_text, ship_card_text, state_text
from .client import print_warnings
from .job_files import load_job_file
from .text_format import format_size, format_table

PARAM_ORDER = ("student_model", "distillation_type", "alpha", "tau", "lr", "epochs")


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def _param(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def trials_table(summary: dict[str, Any]) -> str:
    """The sweep's trials as a fixed-width table (the dashboard's sweep page, in text)."""
    fronts = summary.get("fronts") or {"latency": [], "size": []}
    promoted = (summary.get("promoted") or {}).get("job_id")
    rows = []
    for t in summary.get("trials") or []:
        params = " ".join(f"{k}={_param(t['params'][k])}" for k in PARAM_ORDER
                          if k in (summary.get("search_space") or {}))
        marks = ",".join(m for m, ids in (("latency", fronts["latency"]), ("size", fronts["size"])) if t["job_id"] in ids)
        rows.append([str(t["number"]), str(t["job_id"]), state_text(t) + (" *" if t["job_id"] == promoted else ""), params,
                     _fmt(t.get("top1")), _fmt(t.get("ptl_top1")),
                     latency_text(t["latency"]) if t.get("latency") else _fmt(t.get("latency_ms"), ".3f"),
                     format_size(t["size_bytes"]) if t.get("size_bytes") else "-", marks or "-"])
    table = format_table(rows, ["#", "job", "state", "params", "val top-1", ".ptl top-1", "p50 ms (p10-p90)", "size", "front"])
    cpu = next((t["cpu"] for t in summary.get("trials") or [] if t.get("cpu")), None)
    return table + (f"\nlatency measured on {cpu_text(cpu)}; the front ignores differences inside the p10-p90 spread"
                    if cpu else "")


def cmd_submit(args: argparse.Namespace) -> int:
    body = load_job_file(args.file, args.name)
    if body.get("kind") in (None, "distill"):  # the file's config is the base distill config
        body["kind"] = "sweep"
    if args.preset:
        body["preset"] = args.preset
    job = ApiClient(args.url, args.token).post("/jobs", json=body, what="jobs endpoint")
    print_warnings(job.get("warnings") or [])
    print(f"submitted sweep {job['id']} {job.get('name')!r}: {body.get('trials', 8)} trials, "
          f"{body.get('parallel', 1)} at a time")
    print(job["id"])
    return EXIT_OK


def watch_sweep(client: ApiClient, sweep_id: int, interval: float = 2.0, out: TextIO | None = None,
                sleep: Callable[[float], None] = time.sleep) -> tuple[dict[str, Any], dict[str, Any]]:
    """Print the trials table whenever it changes, until the sweep ends; return (job, summary)."""
    out = out or sys.stdout
    last = ""
    while True:
        job = client.get(f"/jobs/{sweep_id}", what=f"sweep {sweep_id}")
        summary = client.get(f"/jobs/{sweep_id}/trials", what=f"sweep {sweep_id}")
        text = (f"sweep {sweep_id} {job['state']}: {summary['finished']}/{summary['trials_requested']} trials finished"
                f"\n{trials_table(summary)}")
        if text != last:
            out.write(text + "\n\n")
            out.flush()
            last = text
        if job["state"] in FINAL_STATES:
            return job, summary
        sleep(interval)


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        job, summary = watch_sweep(ApiClient(args.url, args.token), args.id, args.interval)
    except KeyboardInterrupt:
        print("\nstopped watching (the sweep keeps running)", file=sys.stderr)
        return 130
    if job["state"] == SUCCEEDED:
        best = summary.get("best") or {}
        print(f"sweep {args.id} succeeded; best trial {best.get('number')} (job {best.get('job_id')}): "
              f"val top-1 {_fmt(best.get('top1'))}%; latency front: jobs {summary['fronts']['latency']}")
        card = ship_card_text(job.get("ship_card"))
        if card:
            print(f"what to ship:\n{card}")
        return EXIT_OK
    print(f"sweep {args.id} {job['state']}: {job.get('error') or ''}", file=sys.stderr)
    return EXIT_JOB_CANCELLED if job["state"] == CANCELLED else EXIT_JOB_FAILED


def cmd_download(args: argparse.Namespace) -> int:
    client = ApiClient(args.url, args.token)
    summary = client.get(f"/jobs/{args.id}/trials", what=f"sweep {args.id}")
    by_id = {t["job_id"]: t for t in summary["trials"]}
    if args.promoted:
        chosen = [(summary.get("promoted") or {}).get("job_id")]
        if chosen[0] is None:
            raise ClientError(f"sweep {args.id} has no promoted trial yet (promote one on its page)", EXIT_NOT_FOUND)
    else:
        chosen = summary["fronts"][args.by]
        if not chosen:
            raise ClientError(f"sweep {args.id} has no finished, exported trial yet", EXIT_NOT_FOUND)
    out = Path(args.output or f"sweep{args.id}")
    out.mkdir(parents=True, exist_ok=True)
    cpus = set()
    for job_id in chosen:
        t = by_id[job_id]
        path, sha, size = download_artifact(client, job_id, "ptl", str(out / f"trial{t['number']}-job{job_id}.ptl"))
        lat = latency_text(t["latency"]) if t.get("latency") else f"{_fmt(t.get('latency_ms'), '.3f')} ms"
        print(f"trial {t['number']} (job {job_id}): top-1 {_fmt(t.get('ptl_top1'))}%, p50 {lat}"
              f" -> {path} ({format_size(size)}), sha256 {sha} verified")
        cpus.add(cpu_text(t.get("cpu")))
    if cpus:
        print(f"latency: batch 1, measured on {'; '.join(sorted(cpus))}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``sweep submit | watch | download``; ``common`` is :func:`distillery.api_client.connection_arguments`."""
    p = sub.add_parser("sweep", help="submit, watch and download a sweep (kind: sweep)")
    ss = p.add_subparsers(dest="sweep_command", metavar="SWEEP_COMMAND", required=True)
    q = ss.add_parser("submit", parents=[common], help="submit a sweep file (YAML or JSON); prints the sweep id last")
    q.add_argument("file", help="{name, config, search_space, trials, parallel, pruner, ...}")
    q.add_argument("--name", help="sweep name (default: the file's name field, else the file name)")
    q.add_argument("--preset", choices=list(PRESET_NAMES),
                   help="start the base config from this preset (GET /api/v1/presets); keys in the file win")
    q.set_defaults(func=guard(cmd_submit))
    q = ss.add_parser("watch", parents=[common], help="the trials table until the sweep ends; exit 0 succeeded")
    q.add_argument("id", type=int)
    q.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
    q.set_defaults(func=guard(cmd_watch))
    q = ss.add_parser("download", parents=[common], help="the front's (or the promoted) .ptl models, sha256-checked")
    q.add_argument("id", type=int)
    which = q.add_mutually_exclusive_group(required=True)
    which.add_argument("--front", action="store_true", help="every model on the Pareto front")
    which.add_argument("--promoted", action="store_true", help="the promoted trial's model")
    q.add_argument("--by", choices=("latency", "size"), default="latency", help="which front (default latency)")
    q.add_argument("--output", help="directory (default ./sweep<ID>)")
    q.set_defaults(func=guard(cmd_download))
