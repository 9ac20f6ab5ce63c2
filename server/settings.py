"""Service settings, read once from ``DISTILLERY_*`` environment variables.

Like Redash's ``settings`` module, but as a frozen dataclass built by :meth:`Settings.from_env`, so
tests and ``create_app(settings=...)`` can pass their own without touching the environment, and
nothing is read at import time.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from .vocabulary import LOCAL

DEFAULT_HOME = "var"
DEFAULT_BROKER_URL = "filesystem://"
METRICS_MODES = ("open", "admin", "off")  # DISTILLERY_METRICS


def home_defaults(home: str) -> dict[str, object]:
    """The embedded default's locations under one state folder ``home``: its SQLite database, broker
    folder, storage, data root and state (generated secret key). ``DISTILLERY_HOME`` moves them all at
    once, so a command run from any folder reaches the same deployment."""
    return {"database_url": f"sqlite:///{home}/distillery.db", "broker_dir": f"{home}/broker", "storage": f"{home}/storage",
            "data_roots": (home,), "state_dir": home}


DEFAULT_DATABASE_URL = home_defaults(DEFAULT_HOME)["database_url"]


def parse_bool(value: str | None, default: bool = False) -> bool:
    """``1/true/yes/on`` are true; unset means ``default``."""
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def parse_int(value: str | None, default: int) -> int:
    return default if value in (None, "") else int(value)


def parse_list(value: str | None, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A comma or ``os.pathsep`` separated list."""
    if value is None:
        return default
    parts = value.replace(os.pathsep, ",").split(",")
    return tuple(p.strip() for p in parts if p.strip())


def parse_choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    """One of ``choices``; anything else stops the process at start naming the variable."""
    value = env.get(name, default).strip().lower() or default
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def parse_limit(env: Mapping[str, str], name: str, default: str) -> str:
    """A rate limit in the ``limits`` notation (``10/minute;100/hour``), checked at start so a typo
    is an error naming the variable rather than a limiter that silently never triggers."""
    from limits import parse_many

    value = env.get(name, default).strip() or default
    try:
        parse_many(value)
    except ValueError as e:
        raise ValueError(f"{name}: {e} (e.g. '10/minute;100/hour')") from None
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the API and the worker need to know about their deployment.

    Attributes:
        database_url: SQLAlchemy URL; SQLite for the embedded default, ``postgresql+psycopg://`` in production.
        broker_url: Celery broker; ``filesystem://`` (folders under ``broker_dir``) or ``redis://``.
        broker_dir: the filesystem transport's message folder (embedded default only).
        storage: root of run directories, artifacts and uploaded datasets.
        data_roots: server folders a job or a registered dataset may point into (besides storage).
        queue: Celery queue name; tests use a unique one so parallel sessions never share messages.
        secret_key: Flask session signing key (dashboard login). No default: ``serve`` and ``worker``
            refuse to start without a strong one; ``distillery up`` generates one in ``state_dir``.
        home: the embedded default's state folder, under which the defaults of ``database_url``,
            ``broker_dir``, ``storage``, ``data_roots`` and ``state_dir`` lie (``DISTILLERY_HOME``;
            default ``var``, relative to the working folder). Each of them can still be set alone.
        state_dir: the embedded default's state folder (its generated secret key lives here, 0600).
        secure_cookies: mark the session cookie ``Secure`` even when the request looks like plain http
            (behind a TLS-terminating proxy); https requests get it anyway.
        session_hours: lifetime of a dashboard login.
        max_archive_ratio: largest unpacked/compressed size ratio of an upload (zip bombs).
        max_processes / max_img_size / max_epochs / max_batch_size: caps on a job's config, by what the
            deployment offers (the engine's own limits are far higher).
        max_jobs_in_flight: jobs one user may have queued or running at once (admins too).
        max_json_bytes / max_upload_bytes: request size limits (JSON bodies / dataset archives).
        max_archive_files / max_archive_bytes: limits on an archive's members and unpacked size.
        worker_gpus: CUDA device ids this worker may hand to its runs (``DISTILLERY_WORKER_GPUS=0,1``);
            empty means CPU (gloo) runs.
        cancel_grace_s: seconds between SIGTERM and SIGKILL when a running job is cancelled.
        poll_s: how often the worker tails metrics and checks for a cancel request.
        export_args: extra exporter flags (``DISTILLERY_EXPORT_ARGS="--no-pte --latency-runs 5"``
            for quick demos and tests).
        lease_s: how long a running attempt's lease lasts without a heartbeat (renewed every
            ``lease_s / 3``); a worker or host gone for longer loses the job to a new attempt.
        requeue_after_s: a queued job whose message was sent longer ago than this (and is not in
            the broker's queue) is sent again by the reconciler; the claim makes duplicates harmless.
        keep_attempts: run directories kept per job (the newest attempts, the running one included;
            ``DISTILLERY_KEEP_ATTEMPTS``, at least 1). Registered artifacts live in storage/artifacts
            and are not affected.
        max_retries: user retries (``POST /jobs/{id}/retry``) a job may have; the next one is a 409.
        worker_name: this worker's name, shown on its jobs (``DISTILLERY_WORKER_NAME``; empty:
            ``host:pid``). Unique among the workers sharing one database.
        worker_slots: GPUs (or, with no GPUs, CPU process slots) this worker gives one run; it only
            consumes the queues of jobs that fit (0: the number of ``worker_gpus``, or one per CPU core;
            see ``server.routing.worker_slots``).
        scratch: this worker's local scratch folder (empty: ``<storage>/scratch/<worker name>``);
            never shared between hosts, unlike ``storage``.
        launcher: ``local`` (torchrun on this host) or ``slurm`` (sbatch; srun + torchrun per node).
        warm_start: the local launcher keeps one interpreter with torch, timm and the engine imported
            and forks each run from it (``DISTILLERY_WARM_START=0``: every run starts cold with torchrun).
        max_nodes: the most nodes one job may ask for (``resources.nodes``); 1 unless a launcher
            that places multi-node runs (Slurm) serves this deployment.
        slurm_partition / slurm_account / slurm_time_limit / slurm_gpus_per_node / slurm_sbatch_args:
            what the Slurm launcher passes to ``sbatch`` (``DISTILLERY_SLURM_*``).
        slurm_poll_s: how often the Slurm launcher asks ``squeue``/``sacct`` for its job's state.
        teacher_cache_max_bytes: the largest teacher-output cache a job may write (its size is
            estimated before it is written; over the cap the job runs with the live teacher).
        sweep_max_trials: the most trials one sweep may ask for.
        public_url: the address users reach this service at (``DISTILLERY_PUBLIC_URL``,
            e.g. ``https://distillery.example.org``): webhook events carry absolute download URLs
            under it; empty: the URLs are paths (``/api/v1/artifacts/7/download``).
        webhook_poll_s / webhook_retry_s / webhook_max_attempts: how often a worker looks for ended
            jobs to announce and sends what is due; the first retry's delay (doubling, at most an
            hour); how many tries an event gets before it is marked failed.
        metrics: who may read ``/metrics``: ``open`` (anyone), ``admin`` (an admin's bearer token; the
            default: job counts by state and kind are the deployment's business, and Prometheus sends a
            token as easily as none) or ``off`` (404).
        login_limit: failed dashboard logins allowed per client address (``DISTILLERY_LOGIN_LIMIT``, in
            the ``limits`` notation: ``10/minute;50/hour``); past it a failed one is a 429 with Retry-After.
        bad_token_limit: API requests with an invalid, expired or revoked bearer token allowed per client
            address (``DISTILLERY_BAD_TOKEN_LIMIT``); valid tokens are never counted nor refused.
        http_threads: request threads of `distillery up`'s HTTP server (waitress); connections
            beyond them wait in its event loop without a thread (``serve`` uses gunicorn's flags).
        http_connection_limit: open connections `distillery up` holds at once; further clients wait
            in the listen backlog until one closes.
        http_timeout_s: seconds a connection of `distillery up` may sit idle (half-open, or a header
            or body that stopped arriving) before it is closed.
    """

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    broker_dir: str = "var/broker"
    storage: str = "var/storage"
    data_roots: tuple[str, ...] = ("var",)
    queue: str = "distillery"
    secret_key: str = ""
    home: str = DEFAULT_HOME
    state_dir: str = "var"
    secure_cookies: bool = False
    session_hours: int = 8
    max_json_bytes: int = 1 << 20
    max_upload_bytes: int = 512 << 20
    max_archive_files: int = 50_000
    max_archive_bytes: int = 4 << 30
    max_archive_ratio: int = 100
    max_processes: int = 8
    max_img_size: int = 512
    max_epochs: int = 1000
    max_batch_size: int = 1024
    max_jobs_in_flight: int = 20
    worker_gpus: tuple[str, ...] = ()
    cancel_grace_s: int = 10
    poll_s: float = 1.0
    export_args: tuple[str, ...] = ()
    lease_s: float = 30.0
    requeue_after_s: float = 60.0
    max_retries: int = 5
    keep_attempts: int = 2
    worker_name: str = ""
    worker_slots: int = 0
    scratch: str = ""
    launcher: str = LOCAL
    warm_start: bool = True
    max_nodes: int = 1
    slurm_partition: str = ""
    slurm_account: str = ""
    slurm_time_limit: str = ""
    slurm_gpus_per_node: int = 0
    slurm_sbatch_args: tuple[str, ...] = ()
    slurm_poll_s: float = 2.0
    teacher_cache_max_bytes: int = 8 << 30
    sweep_max_trials: int = 200
    public_url: str = ""
    webhook_poll_s: float = 2.0
    webhook_retry_s: float = 10.0
    webhook_max_attempts: int = 8
    metrics: str = "admin"
    login_limit: str = "10/minute;100/hour"
    bad_token_limit: str = "60/minute;600/hour"
    http_threads: int = 8
    http_connection_limit: int = 1000
    http_timeout_s: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``DISTILLERY_*`` variables (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        home = env.get("DISTILLERY_HOME") or DEFAULT_HOME
        d = cls(home=home, **home_defaults(home))
        return cls(
            home=home,
            database_url=env.get("DISTILLERY_DATABASE_URL", d.database_url),
            broker_url=env.get("DISTILLERY_BROKER_URL", d.broker_url),
            broker_dir=env.get("DISTILLERY_BROKER_DIR", d.broker_dir),
            storage=env.get("DISTILLERY_STORAGE", d.storage),
            data_roots=parse_list(env.get("DISTILLERY_DATA_ROOTS"), d.data_roots),
            queue=env.get("DISTILLERY_QUEUE", d.queue),
            secret_key=env.get("DISTILLERY_SECRET_KEY", d.secret_key),
            state_dir=env.get("DISTILLERY_STATE_DIR", d.state_dir),
            secure_cookies=parse_bool(env.get("DISTILLERY_SECURE_COOKIES"), d.secure_cookies),
            session_hours=parse_int(env.get("DISTILLERY_SESSION_HOURS"), d.session_hours),
            max_json_bytes=parse_int(env.get("DISTILLERY_MAX_JSON_BYTES"), d.max_json_bytes),
            max_upload_bytes=parse_int(env.get("DISTILLERY_MAX_UPLOAD_BYTES"), d.max_upload_bytes),
            max_archive_files=parse_int(env.get("DISTILLERY_MAX_ARCHIVE_FILES"), d.max_archive_files),
            max_archive_bytes=parse_int(env.get("DISTILLERY_MAX_ARCHIVE_BYTES"), d.max_archive_bytes),
            max_archive_ratio=parse_int(env.get("DISTILLERY_MAX_ARCHIVE_RATIO"), d.max_archive_ratio),
            max_processes=parse_int(env.get("DISTILLERY_MAX_PROCESSES"), d.max_processes),
            max_img_size=parse_int(env.get("DISTILLERY_MAX_IMG_SIZE"), d.max_img_size),
            max_epochs=parse_int(env.get("DISTILLERY_MAX_EPOCHS"), d.max_epochs),
            max_batch_size=parse_int(env.get("DISTILLERY_MAX_BATCH_SIZE"), d.max_batch_size),
            max_jobs_in_flight=parse_int(env.get("DISTILLERY_MAX_JOBS_IN_FLIGHT"), d.max_jobs_in_flight),
            worker_gpus=parse_list(env.get("DISTILLERY_WORKER_GPUS"), d.worker_gpus),
            cancel_grace_s=parse_int(env.get("DISTILLERY_CANCEL_GRACE_S"), d.cancel_grace_s),
            poll_s=float(env.get("DISTILLERY_POLL_S", d.poll_s)),
            export_args=tuple(shlex.split(env.get("DISTILLERY_EXPORT_ARGS", ""))),
            lease_s=float(env.get("DISTILLERY_LEASE_S", d.lease_s)),
            requeue_after_s=float(env.get("DISTILLERY_REQUEUE_AFTER_S", d.requeue_after_s)),
            max_retries=parse_int(env.get("DISTILLERY_MAX_RETRIES"), d.max_retries),
            keep_attempts=max(1, parse_int(env.get("DISTILLERY_KEEP_ATTEMPTS"), d.keep_attempts)),
            worker_name=env.get("DISTILLERY_WORKER_NAME", d.worker_name),
            worker_slots=parse_int(env.get("DISTILLERY_WORKER_SLOTS"), d.worker_slots),
            scratch=env.get("DISTILLERY_SCRATCH", d.scratch),
            launcher=env.get("DISTILLERY_LAUNCHER", d.launcher),
            warm_start=parse_bool(env.get("DISTILLERY_WARM_START"), d.warm_start),
            max_nodes=parse_int(env.get("DISTILLERY_MAX_NODES"), d.max_nodes),
            slurm_partition=env.get("DISTILLERY_SLURM_PARTITION", d.slurm_partition),
            slurm_account=env.get("DISTILLERY_SLURM_ACCOUNT", d.slurm_account),
            slurm_time_limit=env.get("DISTILLERY_SLURM_TIME_LIMIT", d.slurm_time_limit),
            slurm_gpus_per_node=parse_int(env.get("DISTILLERY_SLURM_GPUS_PER_NODE"), d.slurm_gpus_per_node),
            slurm_sbatch_args=tuple(shlex.split(env.get("DISTILLERY_SLURM_SBATCH_ARGS", ""))),
            slurm_poll_s=float(env.get("DISTILLERY_SLURM_POLL_S", d.slurm_poll_s)),
            teacher_cache_max_bytes=parse_int(env.get("DISTILLERY_TEACHER_CACHE_MAX_BYTES"), d.teacher_cache_max_bytes),
            sweep_max_trials=parse_int(env.get("DISTILLERY_SWEEP_MAX_TRIALS"), d.sweep_max_trials),
            public_url=env.get("DISTILLERY_PUBLIC_URL", d.public_url).rstrip("/"),
            webhook_poll_s=float(env.get("DISTILLERY_WEBHOOK_POLL_S", d.webhook_poll_s)),
            webhook_retry_s=float(env.get("DISTILLERY_WEBHOOK_RETRY_S", d.webhook_retry_s)),
            webhook_max_attempts=max(1, parse_int(env.get("DISTILLERY_WEBHOOK_MAX_ATTEMPTS"), d.webhook_max_attempts)),
            metrics=parse_choice(env, "DISTILLERY_METRICS", METRICS_MODES, d.metrics),
            login_limit=parse_limit(env, "DISTILLERY_LOGIN_LIMIT", d.login_limit),
            bad_token_limit=parse_limit(env, "DISTILLERY_BAD_TOKEN_LIMIT", d.bad_token_limit),
            http_threads=max(1, parse_int(env.get("DISTILLERY_HTTP_THREADS"), d.http_threads)),
            http_connection_limit=max(1, parse_int(env.get("DISTILLERY_HTTP_CONNECTION_LIMIT"), d.http_connection_limit)),
            http_timeout_s=max(1, parse_int(env.get("DISTILLERY_HTTP_TIMEOUT_S"), d.http_timeout_s)),
        )

    def replace(self, **changes) -> "Settings":
        return replace(self, **changes)

    def config_caps(self) -> dict[str, int]:
        """This deployment's maxima for job config fields (``DISTILLERY_MAX_*``), by dotted field: the
        OpenAPI schema shows them in place of the engine's own (higher) ones."""
        return {"resources.processes": self.max_processes, "resources.processes_per_node": self.max_processes,
                "resources.nodes": self.max_nodes, "data.img_size": self.max_img_size,
                "train.epochs": self.max_epochs, "train.batch_size": self.max_batch_size}

    # Derived locations -------------------------------------------------------------------------
    @property
    def storage_path(self) -> Path:
        return Path(self.storage).resolve()

    @property
    def runs_path(self) -> Path:
        return self.storage_path / "runs"

    @property
    def artifacts_path(self) -> Path:
        return self.storage_path / "artifacts"

    @property
    def datasets_path(self) -> Path:
        return self.storage_path / "datasets"

    @property
    def allowed_data_roots(self) -> tuple[Path, ...]:
        """Resolved roots a data path may live under: the configured roots plus storage."""
        roots = [Path(r).resolve() for r in self.data_roots]
        roots.append(self.storage_path)
        return tuple(dict.fromkeys(roots))

    @property
    def rate_limit_storage(self) -> str:
        """Where failed-login/bad-token counts live: the deployment's Redis when the broker is one (every
        API process sees the same counts), else the process's memory (the embedded ``distillery up``
        serves from one process)."""
        return self.broker_url if self.broker_url.startswith(("redis://", "rediss://")) else "memory://"

    @property
    def secret_key_file(self) -> Path:
        """Where the embedded default keeps its generated session key."""
        return Path(self.state_dir).resolve() / "secret_key"

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database's file (None for another database)."""
        return Path(self.database_url[len("sqlite:///"):]).resolve() if self.database_url.startswith("sqlite:///") else None

    @property
    def private_paths(self) -> tuple[Path, ...]:
        """The service's own state, never a data or checkpoint path even when under a data root."""
        out = [self.secret_key_file, Path(self.broker_dir).resolve()]
        if self.sqlite_file is not None:
            out.append(self.sqlite_file)
        return tuple(out)

    @property
    def broker_transport(self) -> str | None:
        """kombu transport class for the URL; ``filesystem://`` gets the atomic-write one
        (``server.fs_broker``: kombu's own can hand the worker a half-written message)."""
        return "server.fs_broker:Transport" if self.broker_url.startswith("filesystem") else None

    @property
    def broker_broadcasts(self) -> bool:
        """Whether revoke/remote-control broadcasts are used. Not on the filesystem broker: there
        they become files for every worker that ever lived and pile up; the claim CAS already
        makes a cancelled job's message a no-op (``server.lifecycle.cancel``)."""
        return not self.broker_url.startswith("filesystem")

    def broker_transport_options(self) -> dict:
        """Celery transport options; the filesystem transport needs its folders."""
        if self.broker_url.startswith("filesystem"):
            folder = str(Path(self.broker_dir).resolve() / "queue")
            return {"data_folder_in": folder, "data_folder_out": folder,
                    "control_folder": str(Path(self.broker_dir).resolve() / "control")}
        # Redis: jobs are acked early (see worker/celery_app.py), so the visibility timeout only
        # matters for unacked prefetched messages; keep it long anyway so nothing is redelivered.
        return {"visibility_timeout": 7 * 24 * 3600}

    def ensure_dirs(self) -> None:
        """Create the storage (and filesystem broker) folders; called by commands, never at import."""
        for p in (self.runs_path, self.artifacts_path, self.datasets_path):
            p.mkdir(parents=True, exist_ok=True)
        if self.broker_url.startswith("filesystem"):
            opts = self.broker_transport_options()
            for key in ("data_folder_in", "control_folder"):
                Path(opts[key]).mkdir(parents=True, exist_ok=True)
        if self.database_url.startswith("sqlite:///"):  # relative (sqlite:///var/x.db) or absolute (////)
            Path(self.database_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
