"""The retry window: WeChat delivers a message up to three times, 5 s each, with one MsgId.

The first delivery claims the MsgId (an atomic count in the store) and starts the work; every
delivery then waits on the store for the answer and replies the moment it exists. A delivery
that is not the last and finds no answer keeps its connection until WeChat has dropped it (an
empty reply would tell WeChat to stop retrying); the last one replies in time with a fallback.
"""

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

PENDING = {"state": "pending"}


class Window:
    def __init__(self, config, store) -> None:
        self.store = store
        self.deliveries = config.MPBOT_DELIVERIES
        self.last_wait = config.MPBOT_DELIVERY_WAIT
        # Past WeChat's own timeout: by then it has dropped the connection and sent the next one.
        self.hold = config.MPBOT_WECHAT_TIMEOUT + 0.5

    def deliver(self, msgid: str, first: Callable[[], str | None]) -> tuple[int, dict[str, Any] | None]:
        """Handle one delivery of ``msgid``. ``first`` runs on the first delivery only: it returns
        the bot's own reply text, or None when it started a job that will publish the answer.

        Returns the delivery number and the event to reply with: a final event, ``PENDING`` on
        the last delivery when the answer is not ready, or None (WeChat is gone; reply nothing).
        """
        started = time.monotonic()
        n = self.store.count_delivery(msgid)
        if n == 1:
            try:
                text = first()
            except Exception:
                # Retries of this MsgId would otherwise wait for an answer nobody is writing.
                self._publish_quietly(msgid, {"state": "error", "kind": "internal"})
                raise
            if text is not None:
                event = {"state": "done", "format": "reply", "text": text}
                self.store.publish(msgid, event)
                return n, event
        last = n >= self.deliveries
        budget = (self.last_wait if last else self.hold) - (time.monotonic() - started)
        event = self.store.wait(msgid, max(budget, 0.0))
        if event is None and last:
            event = PENDING
        return n, event

    def _publish_quietly(self, msgid: str, event: dict[str, Any]) -> None:
        try:
            self.store.publish(msgid, event)
        except Exception:
            log.warning("msgid=%s: could not record the failure for later deliveries", msgid)
