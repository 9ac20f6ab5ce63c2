"""The HTTP side every client command shares: one ``requests`` session per command, HTTP failures
turned into :class:`ClientError` with a distinct exit code, and the ``--url``/``--token`` arguments.

The saved connection lives here too: ``$XDG_CONFIG_HOME/distillery/client.json``
(``~/.config/distillery/client.json`` when XDG_CONFIG_HOME is unset), ``{"url", "token", "home"}``, which
``make demo`` writes as soon as its service is up and ``distillery login URL TOKEN`` / ``logout`` manage,
so a terminal other than the demo's works at once without ``export`` lines. It holds a credential, so it
is written atomically (a temporary file in the same folder, renamed over it) with mode 0600 in a 0700
folder. ``home`` is the embedded service's state folder (its ``var/``), so the admin commands
(``distillery token create``) reach its database from any folder (:func:`server.cli.admin_settings`).
Precedence: ``--url``/``--token``, then ``DISTILLERY_URL``/``DISTILLERY_TOKEN``, then the file; the file's
token is only sent to the file's URL: ``--url`` naming another server never gets it.

It lives apart from the command modules (:mod:`distillery.client` for jobs, :mod:`distillery.sweep_client`
for sweeps) so both import it and neither imports the other. It uses ``requests`` only, so the client
works from any machine with the package installed and never imports Flask, Celery or torch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

DEFAULT_URL = "http://127.0.0.1:8000"  # `distillery up` default

# Exit codes. 2 is argparse's usage error; `watch` returns the job's outcome.
EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_JOB_CANCELLED = 3
EXIT_API_ERROR = 4  # the server refused the request (validation error, conflict, 5xx)
EXIT_AUTH = 5  # 401/403: wrong or missing token
EXIT_NOT_FOUND = 6  # 404: unknown job or artifact
EXIT_UNREACHABLE = 7  # connection refused, DNS, timeout
EXIT_CHECKSUM = 8  # downloaded bytes do not match the artifact's sha256


class ClientError(Exception):
    """A request failed in a way the user can fix; ``exit_code`` says which way."""

    def __init__(self, message: str, exit_code: int = EXIT_API_ERROR):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ApiClient:
    """Thin wrapper over ``requests`` that turns HTTP failures into :class:`ClientError`.

    Args:
        url: the service root (``http://host:port``), without ``/api/v1``.
        token: the API token sent as ``Authorization: Bearer``.
        timeout: seconds per request; downloads stream so large files are fine.
    """

    def __init__(self, url: str, token: str | None, timeout: float = 30.0):
        import requests

        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, *, what: str = "", stream: bool = False,
                **kwargs: Any) -> Any:
        """Send one request to ``/api/v1{path}``; return the response (``stream``) or its JSON."""
        import requests

        full = f"{self.url}/api/v1{path}"
        try:
            resp = self.session.request(method, full, timeout=self.timeout, stream=stream, **kwargs)
        except requests.ConnectionError as e:
            reason = "connection refused" if "refused" in str(e).lower() else "cannot connect"
            raise ClientError(
                f"cannot reach the distillery server at {self.url} ({reason}). Is it running "
                f"(`distillery up`)? Set --url or DISTILLERY_URL.", EXIT_UNREACHABLE) from None
        except requests.Timeout:
            raise ClientError(f"the server at {self.url} did not answer within {self.timeout:.0f} s",
                              EXIT_UNREACHABLE) from None
        except requests.RequestException as e:
            raise ClientError(f"request to {full} failed: {e}", EXIT_UNREACHABLE) from None
        if resp.status_code >= 400:
            raise _error_from_response(resp, what or path)
        if stream:
            return resp
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise ClientError(f"{full} answered HTTP {resp.status_code} with something that is not "
                              "JSON; is --url pointing at a distillery server?") from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)


def _error_from_response(resp: Any, what: str) -> ClientError:
    """Map an HTTP error to a message that says what to do next."""
    err: dict[str, Any] = {}
    try:
        body = resp.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
        elif isinstance(body, dict) and isinstance(body.get("error"), str):
            err = {"message": body["error"]}
    except ValueError:
        pass
    message = err.get("message") or resp.reason or "request failed"
    if resp.status_code == 401:
        return ClientError("the server rejected the token (HTTP 401): check --token or "
                           "DISTILLERY_TOKEN; `distillery token create --user NAME` makes one",
                           EXIT_AUTH)
    if resp.status_code == 403:
        return ClientError(f"not allowed (HTTP 403): {message}", EXIT_AUTH)
    if resp.status_code == 404:
        return ClientError(f"{what} not found (HTTP 404)", EXIT_NOT_FOUND)
    problems = [e for e in err.get("errors") or [] if isinstance(e, dict)]
    if len(problems) > 1:  # a config checked whole: every problem, one line each
        lines = [f"  {_named(p.get('field'), p.get('message'))}" for p in problems]
        return ClientError(f"HTTP {resp.status_code}: {len(problems)} problems:\n" + "\n".join(lines), EXIT_API_ERROR)
    return ClientError(f"HTTP {resp.status_code}: {_named(err.get('field'), message)}", EXIT_API_ERROR)


def _named(field: Any, message: Any) -> str:
    """``field: message`` unless the message already starts with its field."""
    return f"{field}: {message}" if field and not str(message).startswith(f"{field}:") else str(message)


# ----------------------------------------------------------------------------- saved connection

FILE_NAME = "client.json"


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/distillery/client.json``, else ``~/.config/distillery/client.json``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "distillery" / FILE_NAME


def read_client_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The file's settings; ``{}`` when there is none or it is not a JSON object (never an error:
    the client then works from flags and environment variables as before)."""
    try:
        data = json.loads(config_path(environ).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def write_client_config(settings: Mapping[str, str], environ: Mapping[str, str] | None = None) -> Path:
    """Replace the file with ``settings`` atomically, readable by its owner only; returns its path."""
    path = config_path(environ)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(dict(settings), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_client_config(environ: Mapping[str, str] | None = None) -> Path | None:
    """Delete the file; its path if there was one."""
    path = config_path(environ)
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path


def connection(url: str | None, token: str | None, environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """The URL and token a command uses: flags, then environment variables, then the file; the file's
    token only with the file's URL."""
    env = os.environ if environ is None else environ
    url = url or env.get("DISTILLERY_URL") or None
    token = token or env.get("DISTILLERY_TOKEN") or None
    saved = read_client_config(env)
    if url is None:
        url = saved.get("url")
    if token is None and saved.get("token") and url and url.rstrip("/") == saved.get("url", "").rstrip("/"):
        token = saved["token"]
    return url, token


# ------------------------------------------------------------------------------- command wiring

def guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print a :class:`ClientError` as one line on stderr and return its exit code."""

    def run(args: argparse.Namespace) -> int:
        url, args.token = connection(getattr(args, "url", None), getattr(args, "token", None))
        args.url = url or DEFAULT_URL
        try:
            return func(args)
        except ClientError as e:
            print(f"error: {e.message}", file=sys.stderr)
            return e.exit_code

    run.__doc__ = func.__doc__
    return run


def connection_arguments() -> argparse.ArgumentParser:
    """The ``--url`` and ``--token`` arguments every client subcommand takes (an argparse parent)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None, help="server root (env DISTILLERY_URL, then the URL saved by `distillery "
                        f"login` or the demo in ~/.config/distillery/client.json, default {DEFAULT_URL})")
    common.add_argument("--token", default=None, help="API token (env DISTILLERY_TOKEN, then the saved one)")
    return common
