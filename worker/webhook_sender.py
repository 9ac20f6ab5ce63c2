"""Every worker announces its users' ended jobs to their webhooks (``server.webhooks``): a daemon
thread that, every ``DISTILLERY_WEBHOOK_POLL_S``, records the events no delivery row holds yet and
sends those that are due. Any number of workers may run it at once (unique events, claimed sends);
a database outage only delays the events."""
from __future__ import annotations

import logging
import threading

from server import webhooks
from server.db import Database, database_unavailable
from server.settings import Settings

log = logging.getLogger(__name__)


class WebhookSender:
    def __init__(self, settings: Settings, database: Database, post: webhooks.Poster = webhooks.post_with_requests):
        self.settings, self.db, self.post = settings, database, post
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def tick(self) -> int:
        """One round: collect new events, send the due ones; how many were sent."""
        with self.db.session() as s:
            webhooks.collect(s, self.settings)
            return webhooks.send_due(s, self.settings, self.post)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.webhook_poll_s):
            try:
                self.tick()
            except Exception as e:
                if database_unavailable(e):
                    log.warning("webhooks: database unavailable, events wait: %s", str(e).splitlines()[0][:200])
                else:
                    log.exception("webhooks: a round failed (the next one retries)")
