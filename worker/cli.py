"""Worker subcommands of `distillery`: ``worker`` (a Celery worker) and ``up`` (API + a worker on
the embedded default). They live with the worker because they start it; the API package never
imports this one."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from server.cli import embedded_http_server, embedded_settings, require_schema, service_settings

log = logging.getLogger(__name__)


def _worker(args: argparse.Namespace) -> int:
    from server.routing import queues_for_worker

    from .app import make_worker_app
    from .registry import use_scratch

    settings = service_settings("worker")
    if (code := require_schema(settings)) is not None:
        return code
    settings.ensure_dirs()
    use_scratch(settings)  # this worker's own TMPDIR, inherited by its runs (worker.registry)
    # Jobs a dead worker left running (on any host) are found by the reconciler (worker.reconciler).
    celery = make_worker_app(settings)
    pool = args.pool or ("solo" if args.concurrency == 1 else "threads")
    queues = ",".join(queues_for_worker(settings))  # only the run sizes this worker can take (server.routing)
    argv = ["worker", f"--loglevel={args.loglevel}", f"--pool={pool}", f"--concurrency={args.concurrency}",
            "-Q", queues, "-n", f"distillery-{os.getpid()}@%h", "--without-gossip", "--without-mingle"]
    celery.worker_main(argv)
    return 0


def _up(args: argparse.Namespace) -> int:
    """API + one supervised worker child on the embedded default (SQLite, filesystem broker), for
    one machine. A worker that dies is restarted (``worker.supervisor``); `up` itself only stops on
    Ctrl-C or SIGTERM. The API runs on waitress (``server.cli.embedded_http_server``: idle timeouts, bounded
    threads and connections) in the main thread; a second thread watches the worker."""
    from server.app import create_app
    from server.fs_broker import sweep
    from server.migrate import upgrade

    from .supervisor import WorkerSupervisor

    settings = embedded_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    if settings.broker_url.startswith("filesystem"):
        opts = settings.broker_transport_options()
        removed = sweep(Path(opts["data_folder_in"]), Path(opts["control_folder"]), settings.queue)
        if removed:
            log.warning("removed %d stale broker files (other queues, control tables, unfinished writes)", removed)
    worker = WorkerSupervisor([sys.executable, "-m", "distillery", "worker", "--concurrency", "1", "--pool", "solo"],
                              report=lambda msg: print(f"distillery up: {msg}", file=sys.stderr, flush=True))
    worker.start()
    stopping = threading.Event()
    watcher = threading.Thread(target=_watch, args=(worker, stopping), name="worker-supervisor", daemon=True)
    server = None
    try:
        server = embedded_http_server(create_app(settings), settings, args.host, args.port)
        signal.signal(signal.SIGTERM, _interrupt)
        watcher.start()
        print(f"distillery up: http://{args.host}:{server.effective_port}/ (API /api/v1, worker pid {worker.pid}, "
              f"database {settings.database_url}, storage {settings.storage_path}); Ctrl-C or SIGTERM stops both",
              flush=True)
        server.run()  # until Ctrl-C or SIGTERM (waitress catches the KeyboardInterrupt and returns)
    except KeyboardInterrupt:
        pass
    finally:
        stopping.set()
        if watcher.is_alive():
            watcher.join()
        if server is not None:
            server.close()
        worker.stop(settings.cancel_grace_s + 30)
    return 0


def _interrupt(signum, _frame):
    """SIGTERM stops `up` the way Ctrl-C does."""
    raise KeyboardInterrupt


def _watch(worker, stopping: threading.Event) -> None:
    """Restart a dead worker child (``WorkerSupervisor.check``) twice a second until `up` stops."""
    while not stopping.wait(0.5):
        try:
            worker.check()
        except Exception:  # a failed restart (say, no memory to fork) is tried again, not the end of restarts
            log.exception("supervising the worker child failed; trying again")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``worker`` and ``up`` to the `distillery` parser."""
    p = sub.add_parser("worker", help="a Celery worker running jobs")
    p.add_argument("--concurrency", type=int, default=1, help="jobs at once (one per GPU group)")
    p.add_argument("--pool", choices=["solo", "threads"], default=None)
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=_worker)

    p = sub.add_parser("up", help="API + one worker on SQLite and the filesystem broker under ./var")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.set_defaults(func=_up)
