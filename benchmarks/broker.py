"""Embedded broker candidates under concurrent publishers: time and correctness.

For each candidate, ``--threads`` publisher threads send ``--messages`` messages in total while one
consumer drains the queue; it reports the wall time, messages/s, messages received, duplicates and
consumer errors (a ``JSONDecodeError`` here is what takes ``distillery up``'s worker down).

    .venv/bin/python benchmarks/broker.py --messages 2000 --threads 4
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from kombu import Connection, Exchange, Queue

CANDIDATES = {
    "filesystem (kombu)": ("filesystem://", None),
    "filesystem (atomic, server.fs_broker)": ("filesystem://", "server.fs_broker:Transport"),
    "sqla+sqlite": ("sqla+sqlite:///{dir}/broker.sqlite", None),
}


def options(url: str, folder: Path) -> dict:
    if url.startswith("filesystem"):
        (folder / "q").mkdir()
        return {"data_folder_in": str(folder / "q"), "data_folder_out": str(folder / "q")}
    return {}


def measure(url: str, transport: str | None, n: int, threads: int, args_pad: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        url = url.format(dir=d)
        opts = options(url, folder)
        queue = Queue("bench", Exchange("bench", type="direct"), routing_key="bench")

        def connect() -> Connection:
            return Connection(url, transport=transport, transport_options=opts)

        with connect() as c:
            queue(c.channel()).declare()
        received: list[int] = []
        errors: list[str] = []
        done = threading.Event()

        def consume() -> None:
            with connect() as c:
                sq = c.SimpleQueue(queue)
                while not done.is_set() or len(received) < n:
                    try:
                        msg = sq.get(timeout=0.05)
                    except sq.Empty:
                        if done.is_set() and time.monotonic() > deadline:
                            return
                        continue
                    except Exception as e:  # noqa: BLE001 - what the worker would die of
                        errors.append(f"{type(e).__name__}: {e}"[:120])
                        continue
                    received.append(msg.payload["i"])
                    msg.ack()

        def publish(start: int) -> None:
            with connect() as c:
                producer = c.Producer()
                for i in range(start, n, threads):
                    producer.publish({"i": i, "pad": "x" * args_pad}, exchange=queue.exchange, routing_key="bench",
                                     declare=[queue], serializer="json")

        deadline = float("inf")
        t0 = time.monotonic()
        consumer = threading.Thread(target=consume)
        consumer.start()
        pubs = [threading.Thread(target=publish, args=(k,)) for k in range(threads)]
        for t in pubs:
            t.start()
        for t in pubs:
            t.join()
        deadline = time.monotonic() + 30
        done.set()
        consumer.join()
        wall = time.monotonic() - t0
        return {"wall_s": wall, "msg_per_s": n / wall, "received": len(set(received)),
                "duplicates": len(received) - len(set(received)), "errors": len(errors),
                "first_error": errors[0] if errors else ""}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--payload", type=int, default=2000, help="bytes of padding per message")
    args = p.parse_args()
    print(f"{args.messages} messages of ~{args.payload} B, {args.threads} publisher threads, 1 consumer")
    print(f"| {'candidate':40} | wall s | msg/s | received | dup | consumer errors |")
    print(f"|{'-' * 42}|-------:|------:|---------:|----:|----------------:|")
    for name, (url, transport) in CANDIDATES.items():
        r = measure(url, transport, args.messages, args.threads, args.payload)
        print(f"| {name:40} | {r['wall_s']:6.1f} | {r['msg_per_s']:5.0f} | {r['received']:8d} | {r['duplicates']:3d} "
              f"| {r['errors']:3d} {r['first_error'][:60]} |", flush=True)


if __name__ == "__main__":
    main()
