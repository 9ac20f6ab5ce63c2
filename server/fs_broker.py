"""The embedded broker: kombu's filesystem transport with atomic message writes.

kombu's stock filesystem transport opens ``<time>_<uuid>.<queue>.msg`` under its final name and
then writes the payload; a consumer listing the folder in between reads an empty or half-written
file and dies with ``JSONDecodeError`` (seen with a few concurrent publishers on ``distillery up``).
Here each message is written under a name the consumer ignores (``.<uuid>.tmp``), flushed, and
renamed into place with ``os.replace``, so a consumer sees either no message or all of it.

Used by ``Settings.broker_transport`` for ``filesystem://`` URLs (see ``server.queue``).
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    """Writes each message to a hidden temp file and renames it into the queue folder."""

    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
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


class Transport(filesystem.Transport):
    """kombu's filesystem transport with :class:`Channel`'s atomic writes."""

    Channel = Channel


def sweep(queue_folder: Path, control_folder: Path, keep_queue: str, stale_tmp_s: float = 60.0) -> int:
    """Remove what no live consumer will read, before the embedded worker starts: messages for any
    queue but ``keep_queue`` (a dead worker's control queues), the control folder's exchange tables
    (rebuilt on declare), and temp files of writes that never finished. Returns how many went."""
    removed = 0
    now = time.time()
    for f in queue_folder.iterdir() if queue_folder.is_dir() else ():
        stale_tmp = f.name.endswith(".tmp") and now - f.stat().st_mtime > stale_tmp_s
        other_queue = f.name.endswith(".msg") and f.name.partition(".")[2] != f"{keep_queue}.msg"
        if stale_tmp or other_queue:
            f.unlink(missing_ok=True)
            removed += 1
    for f in control_folder.iterdir() if control_folder.is_dir() else ():
        if f.is_file():
            f.unlink(missing_ok=True)
            removed += 1
    return removed
