"""Issue 12, item 5 (a, b): GPU-aware queues and priorities, through the REST API with real workers
on real Redis, plus the routing rules themselves and the embedded broker's priority order.

(a) A worker consumes only the queues of the run sizes it can give one run: a 2-process job waits
    in ``queued``, saying why, while a 1-slot worker takes 1-process jobs; a 2-slot worker takes it.
(b) Priorities: with every job submitted while no worker consumes, one worker (concurrency 1,
    solo pool: it holds no message beyond the one it runs) starts them high, normal, low.
"""
from __future__ import annotations

import os
import time

import pytest
import redis
from kombu import Consumer, Queue

from distillery import client
from server import routing
from server.models import Job
from server.queue import make_celery
from server.settings import Settings
from server.workers import Capacity, waiting_reason
from tests.helpers import wait_until

from .conftest import teacher

S = Settings(queue="dq", max_processes=8)


# -- the rules (no services) -----------------------------------------------------------------------
def test_a_job_goes_to_the_queue_of_its_size_and_a_worker_takes_the_sizes_it_fits():
    assert routing.queue_for(S, {}) == "dq"  # the one-process queue is the queue of earlier releases
    assert routing.queue_for(S, {"resources": {"processes": 4}}) == "dq.p4"
    assert routing.queue_for(S, {"resources": {"nodes": 1, "processes_per_node": 2}}) == "dq.p2"
    assert routing.queue_for(S, {"resources": {"nodes": 2, "processes_per_node": 4}}) == "dq.slurm.p4"
    assert routing.queue_for(S, {"resources": {"nodes": 2, "processes": 1}}) == "dq.slurm.p1"

    assert routing.queues_for_worker(S.replace(worker_slots=2)) == ["dq.p2", "dq"]
    assert routing.queues_for_worker(S.replace(worker_gpus=("0", "1", "2", "3"))) == ["dq.p4", "dq.p3", "dq.p2", "dq"]
    assert routing.worker_slots(S.replace(worker_gpus=("0", "1"), worker_slots=8)) == 2  # never more than its GPUs
    assert routing.worker_slots(S) == os.cpu_count()  # a CPU worker: one gloo process per core
    assert routing.queues_for_worker(S.replace(worker_slots=64)) == [f"dq.p{n}" for n in range(8, 1, -1)] + ["dq"]
    slurm = S.replace(launcher="slurm", slurm_gpus_per_node=2)
    assert routing.queues_for_worker(slurm) == ["dq.slurm.p2", "dq.slurm.p1", "dq.p2", "dq"]  # only Slurm takes multi-node
    assert routing.broker_priority("high") < routing.broker_priority("normal") < routing.broker_priority("low")
    assert set(routing.BROKER_PRIORITY) == set(("low", "normal", "high"))


def test_a_queued_job_says_why_it_waits():
    def job(**resources) -> Job:
        return Job(id=7, state="queued", parent_id=None, config={"resources": resources} if resources else {})

    gpus = Capacity(workers=2, single=2, multi=0, gpus=True)
    assert waiting_reason(job(processes=4), gpus) == "waiting for a worker with 4 GPUs"
    assert waiting_reason(job(processes=2), gpus) == "waiting for a free worker"
    assert waiting_reason(job(processes=2), Capacity(workers=1, single=1)) == "waiting for a worker with 2 CPU slots"
    assert waiting_reason(job(), Capacity()) == "waiting for a worker: no worker is running"
    assert waiting_reason(job(nodes=2, processes_per_node=4), gpus) == \
        "waiting for a Slurm worker with 4 GPUs per node (2 nodes)"
    assert waiting_reason(job(nodes=2, processes_per_node=2), Capacity(workers=1, single=2, multi=2, gpus=True)) == \
        "waiting for a free worker"
    waiting = Job(id=8, state="queued", parent_id=7, config={"teacher": {"checkpoint": None}})
    assert waiting_reason(waiting, gpus) == "waiting for job 7 (its teacher) to finish"
    assert waiting_reason(Job(id=9, state="running", config={}), gpus) is None
    line = client.progress_line({"id": 7, "state": "queued", "waiting_reason": "waiting for a worker with 4 GPUs"})
    assert line.endswith("(waiting for a worker with 4 GPUs)"), line  # `distillery watch` says it too


def test_the_embedded_broker_delivers_by_priority_then_time_across_queues(tmp_path):
    """server.fs_broker with a real kombu consumer: high first whatever its queue, then by send time."""
    settings = Settings(broker_url="filesystem://", broker_dir=str(tmp_path / "broker"), queue="dq")
    for key in ("data_folder_in", "control_folder"):
        os.makedirs(settings.broker_transport_options()[key], exist_ok=True)
    celery = make_celery(settings)
    sent = [("dq", "low"), ("dq.p2", "normal"), ("dq", "high"), ("dq.p2", "low"), ("dq", "normal"), ("dq.p2", "high")]
    for i, (queue, priority) in enumerate(sent):
        celery.send_task("t", args=[i], queue=queue, priority=routing.broker_priority(priority))
        time.sleep(0.002)  # distinct send times
    got: list[int] = []
    with celery.connection_for_read() as conn:
        def on_message(body, message):
            got.append(int(message.headers["argsrepr"].strip("[]")))
            message.ack()

        with Consumer(conn, [Queue("dq", routing_key="dq"), Queue("dq.p2", routing_key="dq.p2")], callbacks=[on_message],
                      accept=["json"]):
            for _ in sent:
                conn.drain_events(timeout=5)
    assert got == [2, 5, 1, 4, 0, 3], got  # high (by time), normal, low


# -- (a) GPU-aware queues, live ----------------------------------------------------------------------
def queue_keys(stack) -> dict[str, list[bytes]]:
    """The deployment's Redis lists (a queue has one per priority step) and their messages."""
    client = redis.Redis.from_url(stack.env["DISTILLERY_BROKER_URL"])
    try:
        return {k.decode(errors="replace"): client.lrange(k, 0, -1)
                for k in client.scan_iter(f"{stack.env['DISTILLERY_QUEUE']}*") if client.type(k) == b"list"}
    finally:
        client.close()


def in_queue(stack, job_id: int) -> list[str]:
    """The Redis lists holding the job's run message."""
    task_id = stack.sql("SELECT task_id FROM jobs WHERE id = :i", i=job_id)[0]["task_id"].encode()
    return [k for k, msgs in queue_keys(stack).items() if any(task_id in m for m in msgs)]


@pytest.mark.integration
def test_a_job_too_big_for_every_worker_waits_visibly_until_one_fits(stack):
    q = stack.env["DISTILLERY_QUEUE"]
    stack.start_worker("small", DISTILLERY_WORKER_SLOTS="1")
    assert stack.live_workers()["small"]["queues"] == [q]

    big = stack.submit("two-processes", teacher(stack.data, processes=2))
    job = stack.job(big)
    assert job["state"] == "queued" and job["waiting_reason"] == "waiting for a worker with 2 CPU slots", job
    listed = {j["id"]: j for j in stack.api("GET", "/jobs?state=queued").json()["jobs"]}
    assert listed[big]["waiting_reason"] == job["waiting_reason"]
    assert [k.split("\x06")[0] for k in in_queue(stack, big)] == [f"{q}.p2"]

    # The small worker is alive and consuming: it takes a 1-process job submitted after the big one.
    small = stack.submit("one-process", teacher(stack.data, processes=1, epochs=3))
    running = stack.wait(small, states=("running",), timeout=120)
    assert running["worker"] == "small" and running["waiting_reason"] is None
    job = stack.job(big)
    assert job["state"] == "queued" and job["worker"] is None, job
    assert job["waiting_reason"] == "waiting for a worker with 2 CPU slots"
    stack.api("POST", f"/jobs/{small}/cancel")

    stack.start_worker("big", DISTILLERY_WORKER_SLOTS="2")  # fits: it takes the waiting job
    assert stack.live_workers()["big"]["queues"] == [f"{q}.p2", q]
    job = stack.wait(big, states=("running", "exporting", "succeeded"), timeout=120)
    assert job["worker"] == "big" and job["waiting_reason"] is None, job


# -- (b) priorities, live ------------------------------------------------------------------------------
@pytest.mark.integration
def test_the_broker_starts_high_then_normal_then_low(stack):
    assert stack.live_workers() == {}  # nobody consumes while the jobs are submitted
    ids = {"low": stack.submit("low", teacher(stack.data), priority="low"),
           "normal": stack.submit("normal", teacher(stack.data)),
           "high": stack.submit("high", teacher(stack.data), user="root", priority="high")}
    assert {p: stack.job(i)["priority"] for p, i in ids.items()} == {"low": "low", "normal": "normal", "high": "high"}
    assert stack.job(ids["low"])["waiting_reason"] == "waiting for a worker: no worker is running"

    stack.start_worker("one", DISTILLERY_WORKER_SLOTS="1")  # concurrency 1, solo pool
    order: list[str] = []
    held_back: list[int] = []

    def next_started():
        for priority, job_id in ids.items():
            job = stack.job(job_id)
            if priority not in order and job["state"] in ("running", "exporting"):
                order.append(priority)
                # the worker holds no message but the one it runs: the others still wait in Redis
                held_back.append(sum(1 for p, i in ids.items() if p not in order and in_queue(stack, i)))
                stack.api("POST", f"/jobs/{job_id}/cancel", user="root")  # so it goes on to the next
        return len(order) == 3

    wait_until(next_started, 240, "the three jobs to start one after another", describe=stack.logs)
    assert order == ["high", "normal", "low"], order
    assert held_back == [2, 1, 0], held_back
    started = [stack.job(ids[p])["started_at"] for p in order]
    assert started == sorted(started), started
