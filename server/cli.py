"""API subcommands of `distillery`: db upgrade, token create, user limit, serve (the worker package owns worker and up;
the HTTP server `up` runs is built here, next to `serve`'s).

All of them read :class:`server.settings.Settings` from ``DISTILLERY_*`` once and pass it down.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

log = logging.getLogger(__name__)


def settings_from_env():
    from .settings import Settings

    return Settings.from_env()


def admin_settings():
    """Settings for the admin commands (``token``, ``user limit``), which must find the deployment's
    database from any folder, not only the one ``distillery up`` runs in. In order: DISTILLERY_HOME or
    DISTILLERY_DATABASE_URL when set (explicit always wins); the working folder's ``var/`` when it holds
    the database (as before); else the state folder the demo recorded in the client's settings file
    (``distillery.api_client``, written as soon as its service is up). Not the package's location:
    an installed package lives in site-packages, where no deployment keeps its state."""
    from .settings import Settings

    env = dict(os.environ)
    here = Settings.from_env(env)
    if env.get("DISTILLERY_HOME") or env.get("DISTILLERY_DATABASE_URL") or here.sqlite_file is None or here.sqlite_file.exists():
        return here
    from distillery.api_client import config_path, read_client_config

    recorded = read_client_config(env).get("home")
    if recorded and Settings.from_env({**env, "DISTILLERY_HOME": recorded}).sqlite_file.exists():
        return Settings.from_env({**env, "DISTILLERY_HOME": recorded})
    print(f"error: no database at {here.sqlite_file}: run this in the folder `distillery up` runs in, or set "
          f"DISTILLERY_HOME to that folder's var/ (the demo records it in {config_path(env)})", file=sys.stderr)
    raise SystemExit(2)


def service_settings(role: str):
    """Settings for ``serve`` / ``worker``: exit 2 with instructions on a missing or weak secret key."""
    from .session_key import WeakSecretKey, require_strong_key

    settings = settings_from_env()
    try:
        require_strong_key(settings.secret_key)
    except WeakSecretKey as e:
        print(f"error: distillery {role} refuses to start: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return settings


def embedded_settings():
    """Settings for ``distillery up``: without DISTILLERY_SECRET_KEY, a key generated once in the state
    folder (0600); exported so the worker child (which refuses a missing key) gets the same one."""
    from .session_key import WeakSecretKey, embedded_key, require_strong_key

    settings = settings_from_env()
    try:
        if not settings.secret_key:
            settings = settings.replace(secret_key=embedded_key(settings.secret_key_file))
            os.environ["DISTILLERY_SECRET_KEY"] = settings.secret_key
        require_strong_key(settings.secret_key)
    except WeakSecretKey as e:
        print(f"error: distillery up refuses to start: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return settings


def require_schema(settings) -> int | None:
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

    settings = settings_from_env()
    settings.ensure_dirs()
    upgrade(settings.database_url, args.revision)
    print(f"database at {args.revision}")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from .auth import create_token
    from .db import Database

    settings = admin_settings()
    if (code := require_schema(settings)) is not None:
        return code
    database = Database(settings.database_url)
    with database.session() as s:
        token = create_token(s, args.user, admin=args.admin, name=args.name, expires_in_days=args.expires_days)
    database.dispose()
    expiry = f", expires in {args.expires_days:g} days" if args.expires_days else ""
    print(f"created a token for {args.user}{' (admin)' if args.admin else ''}{expiry}; it is shown once:")
    print(token)
    return 0


def _token_rows(args: argparse.Namespace, fn) -> int:
    from .db import Database

    settings = admin_settings()
    if (code := require_schema(settings)) is not None:
        return code
    database = Database(settings.database_url)
    try:
        with database.session() as s:
            return fn(s)
    finally:
        database.dispose()


def _token_list(args: argparse.Namespace) -> int:
    """id, user, name, created, last used, expires, state: never the secret (only its hash is stored)."""
    from sqlalchemy import select

    from .auth import is_live
    from .models import ApiToken, User
    from .serializers import iso_utc

    def show(s) -> int:
        q = select(ApiToken).join(User, ApiToken.user_id == User.id).order_by(ApiToken.id)
        if args.user:
            q = q.where(User.name == args.user)
        print("id\tuser\tname\tcreated\tlast_used\texpires\tstate")
        for t in s.scalars(q):
            state = "revoked" if t.revoked_at else ("active" if is_live(t) else "expired")
            print("\t".join(str(v or "-") for v in (t.id, t.user.name, t.name, iso_utc(t.created_at), iso_utc(t.last_used_at),
                                                     iso_utc(t.expires_at), state)))
        return 0

    return _token_rows(args, show)


def _token_revoke(args: argparse.Namespace) -> int:
    from .auth import revoke
    from .models import ApiToken

    def revoke_one(s) -> int:
        row = s.get(ApiToken, args.id)
        if row is None:
            print(f"error: no token with id {args.id} (see `distillery token list`)", file=sys.stderr)
            return 1
        revoke(s, row)
        print(f"revoked token {row.id} of {row.user.name}")
        return 0

    return _token_rows(args, revoke_one)


def _user_limit(args: argparse.Namespace) -> int:
    """Show a user's limits, or set them (``--max-jobs-in-flight N``; ``--default`` clears the cap)."""
    from sqlalchemy import select

    from .models import User
    from .quotas import LimitError, limits_of, set_limits

    settings = admin_settings()

    def apply(s) -> int:
        user = s.scalar(select(User).where(User.name == args.name))
        if user is None:
            print(f"error: no user named {args.name!r} (users are created by `distillery token create --user NAME`)",
                  file=sys.stderr)
            return 1
        if args.default or args.max_jobs_in_flight is not None:
            try:
                set_limits(s, user, {"max_jobs_in_flight": None if args.default else args.max_jobs_in_flight})
            except LimitError as e:
                print(f"error: --{e.field.replace('_', '-')}: {e.message}", file=sys.stderr)
                return 2
        limits = limits_of(s, settings, user)
        own = limits["max_jobs_in_flight"]
        print(f"{user.name}: at most {limits['effective_max_jobs_in_flight']} jobs in flight "
              f"({'set for this user' if own is not None else 'the server default, DISTILLERY_MAX_JOBS_IN_FLIGHT'}); "
              f"{limits['jobs_in_flight']} queued or running now")
        return 0

    return _token_rows(args, apply)


def _serve(args: argparse.Namespace) -> int:
    settings = service_settings("serve")
    if (code := require_schema(settings)) is not None:
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


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (for `up` without --port, the demo and the tests)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


EMBEDDED_SPARE_FDS = 256  # beyond `up`'s connection limit: the database, log files, the worker child's pipes


def raise_fd_limit(connections: int) -> None:
    """Let this process hold ``connections`` sockets: raise the soft RLIMIT_NOFILE up to the hard one.
    A server that runs out of descriptors spins on a listening socket it cannot accept from."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + EMBEDDED_SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            log.warning("open files limited to %d: fewer than %d connections can be held", new, connections)


def embedded_http_server(app, settings, host: str, port: int):
    """`distillery up`'s HTTP server: waitress bound to ``host:port`` (0: a free port, read
    ``effective_port``); run it with ``.run()`` (returns on KeyboardInterrupt), then ``.close()`` it.

    Werkzeug's threaded server (what `up` used before) starts a thread per connection and waits for
    a request forever: 6,000 half-open connections made 5,919 threads, and a partial body was still
    awaited after 45 s. waitress reads requests on one event loop and hands one of
    ``http_threads`` a request only once it has fully arrived, so a slow or silent client costs a
    socket, not a thread; a connection idle for ``http_timeout_s`` (mid-header or mid-body included)
    is closed; at most ``http_connection_limit`` are open at once. ``serve`` runs gunicorn instead."""
    from waitress.server import create_server

    raise_fd_limit(settings.http_connection_limit)
    return create_server(
        app, host=host, port=port, threads=settings.http_threads,
        connection_limit=settings.http_connection_limit, channel_timeout=settings.http_timeout_s,
        cleanup_interval=max(1, settings.http_timeout_s // 4),  # so idle ones go within 1.25 x the timeout
        asyncore_use_poll=True,  # select() fails beyond 1,024 descriptors
        # waitress reads a body before the app sees it: let through what the API's own 413s judge
        max_request_body_size=max(settings.max_upload_bytes, settings.max_json_bytes) + (1 << 20),
        ident="distillery", clear_untrusted_proxy_headers=True)


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
    q.add_argument("--name", default=None, help="what the token is for (shown by `token list`)")
    q.add_argument("--expires-days", type=float, default=None, help="the token stops working after this many days")
    q.set_defaults(func=_token_create)
    q = tsub.add_parser("list", help="tokens (id, user, name, dates, state), never their secrets")
    q.add_argument("--user", default=None)
    q.set_defaults(func=_token_list)
    q = tsub.add_parser("revoke", help="revoke a token at once (API calls and dashboard sessions opened with it)")
    q.add_argument("id", type=int)
    q.set_defaults(func=_token_revoke)

    p = sub.add_parser("user", help="users' limits")
    usub = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    q = usub.add_parser("limit", help="show or set how many jobs one user may have queued or running at once")
    q.add_argument("name", help="the user (as in `token create --user NAME`)")
    group = q.add_mutually_exclusive_group()
    group.add_argument("--max-jobs-in-flight", type=int, default=None, metavar="N",
                       help="this user's cap (0 stops their submissions); over it a submission is a 429")
    group.add_argument("--default", action="store_true", help="drop the user's own cap: DISTILLERY_MAX_JOBS_IN_FLIGHT applies")
    q.set_defaults(func=_user_limit)

    p = sub.add_parser("serve", help="the API (gunicorn; --dev for Flask's server)")
    p.add_argument("--host", default=os.environ.get("DISTILLERY_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("DISTILLERY_PORT", "8000")))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--dev", action="store_true", help="Flask development server instead of gunicorn")
    p.set_defaults(func=_serve)
