"""Service subcommands of `distillery`: db upgrade, token create, serve, worker, up.

All of them read :class:`server.settings.Settings` from ``DISTILLERY_*`` once and pass it down.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys

log = logging.getLogger(__name__)


def _settings():
    from .settings import Settings

    return Settings.from_env()


def _require_schema(settings) -> int | None:
    """None when the database is migrated, else print why and return the exit code 2."""
    from .db import make_engine
    from .migrate import SchemaNotReady, require_current_schema

    engine = make_engine(settings.database_url)
    try:
        require_current_schema(engine)
    except SchemaNotReady as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return None


def _db_upgrade(args: argparse.Namespace) -> int:
    from .migrate import upgrade

    settings = _settings()
    settings.ensure_dirs()
    upgrade(settings.database_url, args.revision)
    print(f"database at {args.revision}")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from .auth import create_token
    from .db import Database

    settings = _settings()
    if (code := _require_schema(settings)) is not None:
        return code
    database = Database(settings.database_url)
    with database.session() as s:
        token = create_token(s, args.user, admin=args.admin)
    database.dispose()
    print(f"created a token for {args.user}{' (admin)' if args.admin else ''}; it is shown once:")
    print(token)
    return 0


def _serve(args: argparse.Namespace) -> int:
    settings = _settings()
    if (code := _require_schema(settings)) is not None:
        return code
    settings.ensure_dirs()
    if args.dev:
        from .app import create_app

        create_app(settings).run(host=args.host, port=args.port, threaded=True)
        return 0
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"{args.host}:{args.port}", "--workers", str(args.workers),
           "--worker-class", "gthread", "--threads", str(args.threads), "--timeout", "120",
           "--access-logfile", "-", "server.app:create_app()"]
    os.execvp(cmd[0], cmd)
    return 0  # not reached


def _worker(args: argparse.Namespace) -> int:
    from worker.celery_app import make_celery
    from worker.tasks import recover_orphans

    from .db import Database

    settings = _settings()
    if (code := _require_schema(settings)) is not None:
        return code
    settings.ensure_dirs()
    recovered = recover_orphans(settings, Database(settings.database_url), socket.gethostname())
    if recovered:
        log.warning("marked jobs %s failed: their worker had died", recovered)
    celery = make_celery(settings)
    pool = args.pool or ("solo" if args.concurrency == 1 else "threads")
    argv = ["worker", f"--loglevel={args.loglevel}", f"--pool={pool}", f"--concurrency={args.concurrency}",
            "-Q", settings.queue, "-n", f"distillery-{os.getpid()}@%h", "--without-gossip", "--without-mingle"]
    celery.worker_main(argv)
    return 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (for `up` without --port, the demo and the tests)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _up(args: argparse.Namespace) -> int:
    """API + one worker child on the embedded default (SQLite, filesystem broker), for one machine."""
    from werkzeug.serving import make_server

    from .app import create_app
    from .migrate import upgrade

    settings = _settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    worker = subprocess.Popen([sys.executable, "-m", "distillery", "worker", "--concurrency", "1", "--pool", "solo"],
                              start_new_session=True)
    port = args.port or free_port(args.host)
    server = make_server(args.host, port, create_app(settings), threaded=True)

    def _stop(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(f"distillery up: http://{args.host}:{port}/ (API /api/v1, worker pid {worker.pid}, "
          f"database {settings.database_url}, storage {settings.storage_path}); Ctrl-C or SIGTERM stops both",
          flush=True)
    try:
        while worker.poll() is None:
            server.timeout = 0.5
            server.handle_request()
        print(f"error: the worker exited with code {worker.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.server_close()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)  # warm shutdown: a running job is stopped and re-queued
            try:
                worker.wait(timeout=settings.cancel_grace_s + 30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


def register(sub: argparse._SubParsersAction) -> None:
    """Add the service commands to the `distillery` parser."""
    p = sub.add_parser("db", help="database schema (Alembic)")
    dbsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    q = dbsub.add_parser("upgrade", help="create or migrate the schema to the latest revision")
    q.add_argument("--revision", default="head")
    q.set_defaults(func=_db_upgrade)

    p = sub.add_parser("token", help="API tokens")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    q = tsub.add_parser("create", help="create the user if needed and print a new token on the last line")
    q.add_argument("--user", required=True)
    q.add_argument("--admin", action="store_true", help="the user sees and acts on every job")
    q.set_defaults(func=_token_create)

    p = sub.add_parser("serve", help="the API (gunicorn; --dev for Flask's server)")
    p.add_argument("--host", default=os.environ.get("DISTILLERY_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("DISTILLERY_PORT", "8000")))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--dev", action="store_true", help="Flask development server instead of gunicorn")
    p.set_defaults(func=_serve)

    p = sub.add_parser("worker", help="a Celery worker running jobs")
    p.add_argument("--concurrency", type=int, default=1, help="jobs at once (one per GPU group)")
    p.add_argument("--pool", choices=["solo", "threads"], default=None)
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=_worker)

    p = sub.add_parser("up", help="API + one worker on SQLite and the filesystem broker under ./var")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.set_defaults(func=_up)
