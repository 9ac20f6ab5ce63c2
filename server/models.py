"""Database tables as SQLAlchemy 2.x typed models: the single source of the schema.

Alembic's ``migrations/env.py`` imports :data:`Base.metadata` from here, so the models and the
migrations can never describe two different schemas.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .vocabulary import LOCAL, QUEUED

# Stable constraint names, so migrations on PostgreSQL and SQLite (batch mode) agree.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # An admin's cap on this user's queued + running jobs; null: the deployment's
    # DISTILLERY_MAX_JOBS_IN_FLIGHT (see migration 0005).
    max_jobs_in_flight: Mapped[int | None] = mapped_column(Integer, nullable=True)

    tokens: Mapped[list["ApiToken"]] = relationship(back_populates="user", cascade="all, delete-orphan")


class ApiToken(Base):
    """An API token. Only the sha256 of the token is stored; the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)

    user: Mapped[User] = relationship(back_populates="tokens")


class Dataset(Base):
    """An ImageFolder on the server (registered path or extracted upload) with train/ and val/."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    source: Mapped[str] = mapped_column(String(16))  # path | upload
    path: Mapped[str] = mapped_column(Text)
    num_classes: Mapped[int] = mapped_column(Integer, default=0)
    num_train: Mapped[int] = mapped_column(Integer, default=0)
    num_val: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    owner: Mapped[User] = relationship()


class Job(Base):
    """One training job. ``state`` only moves by compare-and-set (see ``server.lifecycle.transition``)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_owner_state", "owner_id", "state"),
                      Index("ix_jobs_state_lease", "state", "lease_expires_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default=QUEUED, index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True, index=True)
    # A baseline run: the distill job whose student it trains without the teacher (see migration 0004).
    baseline_of: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True, index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    run_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The lease of the attempt that runs now: who holds it and until when (renewed by heartbeats).
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    attempt_history: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    # When the run message was last sent; the reconciler re-sends one that may have been lost.
    enqueued_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # low | normal | high (server.vocabulary.PRIORITIES); the broker delivers higher first.
    priority: Mapped[str] = mapped_column(String(8), default="normal", server_default="normal")
    # How the running attempt was started (server.vocabulary.LAUNCHERS) and, for Slurm, its job id:
    # a restarted worker re-attaches to a Slurm job that is still running instead of starting another.
    launcher: Mapped[str | None] = mapped_column(String(16), nullable=True)
    launcher_job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # A sweep's trial: its number in the sweep's Optuna study (the sweep is the parent job).
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Why the job stopped or was asked to stop (server.vocabulary.STOP_REASONS; migration 0006): the
    # worker ends a run stopped on request in this state (pruned or cancelled), and the API shows it.
    stop_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Replicates (migration 0007): a distill job with ``baseline: true`` and ``seeds: N`` is the
    # primary of N students and N baselines; students of seeds k > 0 point at it here, and it holds
    # ``seeds`` = N. ``comparison``: the gain over the baselines with its interval, computed by the
    # worker when the group's last run ends (worker.comparison) and only read by the serializer.
    replicate_of: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True, index=True)
    seeds: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    comparison: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)

    owner: Mapped[User] = relationship()
    artifacts: Mapped[list["Artifact"]] = relationship(back_populates="job", order_by="Artifact.id")


def waits_for_teacher(job: Job) -> bool:
    """A pipeline's distill job waits (queued, no message) until its teacher checkpoint exists.
    Here, beside the row it reads, because lifecycle, the worker registry and the reconciler ask it."""
    return job.parent_id is not None and job.config.get("teacher", {}).get("checkpoint") is None


class MetricPoint(Base):
    """One value of one series (``loss``, ``val_top1``...) at a global step of one attempt."""

    __tablename__ = "metric_points"
    __table_args__ = (Index("ix_metric_points_job_name_step", "job_id", "name", "step"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    name: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[float | None] = mapped_column(Float, nullable=True)


class Artifact(Base):
    """A file a job produced, copied into storage, with its size and sha256 (the download ETag)."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    format: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A name a later job can refer to it by (a teacher-output cache's key), unique per format.
    name: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)

    job: Mapped[Job] = relationship(back_populates="artifacts")


class Worker(Base):
    """A worker process as it last announced itself: its name (``DISTILLERY_WORKER_NAME``), how
    many GPUs (or CPU slots) it gives one run, its launcher and the queues it consumes. Written by
    the worker's heartbeat; read by the API to say why a queued job waits."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    host: Mapped[str] = mapped_column(String(200))
    slots: Mapped[int] = mapped_column(Integer, default=1)
    gpus: Mapped[bool] = mapped_column(Boolean, default=False)
    launcher: Mapped[str] = mapped_column(String(16), default=LOCAL)
    queues: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Webhook(Base):
    """A URL a user asked to be told at when one of their jobs ends (``server.webhooks``). The secret
    signs each event (HMAC-SHA256 over the body); it is shown once, at registration, and kept here
    because the sender needs it."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    owner: Mapped[User] = relationship()


class WebhookDelivery(Base):
    """One event (a job attempt that reached a final state) for one webhook, and how sending it went.
    Unique per (webhook, job, attempt): two workers collecting events at once record it once."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("webhook_id", "job_id", "attempt", name="uq_webhook_deliveries_event"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)
