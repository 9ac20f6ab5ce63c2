"""The embedded broker: kombu's filesystem transport with atomic message writes.

kombu's stock filesystem transport opens ``<time>_<uuid>.<queue>.msg`` under its final name and
then writes the payload; a consumer listing the folder in between reads an empty or half-written
file and dies with ``JSONDecodeError`` (seen with a few concurrent publishers on ``distillery up``).
Here each message is written under a name the consumer ignores (``.<uuid>.tmp``), flushed, and
renamed into place with ``os.replace``, so a consumer sees either no message or all of it.

Priorities (``server.routing``): a message's name starts with its priority number, lowest first as
on Redis, then its send time, so sorting the folder lists the next message to deliver first; the
consumer takes the first one of *any* queue it consumes (:meth:`Channel._get_many`), so a high
priority job of one size goes before a normal one of another size, as on Redis.

Used by ``Settings.broker_transport`` for ``filesystem://`` URLs (see ``server.queue``).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads


class Channel(filesystem.Channel):
    """Writes each message to a hidden temp file and renames it into the queue folder, named so
    that the folder's sorted order is the delivery order (priority, then time)."""

    def _put(self, queue, payload, **kwargs):
        rank = self._get_message_priority(payload)  # 0..9; 0 is delivered first (server.routing)
        name = f"{rank}-{int(round(monotonic() * 1000)):015d}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        tmp = os.path.join(self.data_folder_out, f".{uuid.uuid4()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get_many(self, queues, timeout=None):
        """Deliver the first message, by name (priority, then time), of any of ``queues``; kombu's
        own ``_get`` serves one queue at a time, round robin, which would ignore priorities
        across queues. Taken like kombu takes one: moved out of the folder (only one consumer
        wins the move), then read."""
        wanted = {f"{q}.msg": q for q in queues}
        for filename in sorted(os.listdir(self.data_folder_in)):
            queue = wanted.get(filename.partition(".")[2])
            if queue is None:
                continue
            payload = self._take(filename)
            if payload is not None:
                self.connection._deliver(loads(bytes_to_str(payload)), queue)
                return
        raise Empty()

    def _take(self, filename: str) -> bytes | None:
        folder = self.processed_folder if self.store_processed else tempfile.gettempdir()
        try:
            shutil.move(os.path.join(self.data_folder_in, filename), folder)
        except OSError:  # another consumer took it first
            return None
        path = os.path.join(folder, filename)
        try:
            with open(path, "rb") as f:
                payload = f.read()
            if not self.store_processed:
                os.remove(path)
        except OSError as exc:
            raise ChannelError(f"Cannot read file {path!r} from queue.") from exc
        return payload


class Transport(filesystem.Transport):
    """kombu's filesystem transport with :class:`Channel`'s atomic writes."""

    Channel = Channel


def sweep(queue_folder: Path, control_folder: Path, keep_queue: str, stale_tmp_s: float = 60.0) -> int:
    """Remove what no live consumer will read, before the embedded worker starts: messages for any
    queue but ``keep_queue`` and its run-size queues ``keep_queue.*`` (``server.routing``), such as
    a dead worker's control queues, the control folder's exchange tables (rebuilt on declare), and
    temp files of writes that never finished. Returns how many went."""
    removed = 0
    now = time.time()
    for f in queue_folder.iterdir() if queue_folder.is_dir() else ():
        stale_tmp = f.name.endswith(".tmp") and now - f.stat().st_mtime > stale_tmp_s
        queue = f.name.partition(".")[2].removesuffix(".msg")
        other_queue = f.name.endswith(".msg") and queue != keep_queue and not queue.startswith(f"{keep_queue}.")
        if stale_tmp or other_queue:
            f.unlink(missing_ok=True)
            removed += 1
    for f in control_folder.iterdir() if control_folder.is_dir() else ():
        if f.is_file():
            f.unlink(missing_ok=True)
            removed += 1
    return removed
