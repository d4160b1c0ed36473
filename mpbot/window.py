"""The retry window: WeChat delivers a message up to three times, 5 s each, with one MsgId.

The first delivery claims the MsgId (an atomic count in the store, ``keys.deliveries``) and
decides what the message gets (``inbox.py``): a text, or an answer to show. Every delivery then
waits on the answer's stream and replies the moment the answer exists. A delivery that is not the
last and finds no answer keeps its connection until WeChat has dropped it (an empty reply would
tell WeChat to stop retrying); the last one replies in time with what exists so far and the link.
"""

import time
from collections.abc import Callable

from .inbox import Reply


class Window:
    def __init__(self, config, store, keys, answers, reader) -> None:
        self.config = config
        self.store = store
        self.keys = keys
        self.answers = answers
        self.reader = reader
        self.ttl = config.MPBOT_ANSWER_TTL
        self.deliveries = config.MPBOT_DELIVERIES
        self.last_wait = config.MPBOT_DELIVERY_WAIT
        # Past WeChat's own timeout: by then it has dropped the connection and sent the next one.
        self.hold = config.MPBOT_WECHAT_TIMEOUT + 0.5

    def deliver(self, openid: str, msgid: str, first: Callable[[], Reply]) -> tuple[int, str, str | None]:
        """Handle one delivery of ``msgid``. ``first`` runs on the first delivery only and
        returns the message's reply as decided (see ``Reader``).

        Returns the delivery number, the outcome (for the log and metrics.py) and the reply text,
        or None when WeChat is gone and nothing should be said.
        """
        started = time.monotonic()
        n = self.store.incr(self.keys.deliveries(msgid), self.ttl)
        last = n >= self.deliveries
        if n == 1:
            reply = first()
        else:
            # The first delivery may still be deciding (a slow store, a slow moderation hook):
            # wait for it as long as this delivery may wait at all.
            wait = (self.last_wait if last else self.hold) - (time.monotonic() - started)
            reply = self.reader.decided(openid, msgid, timeout=max(wait, 0.0))
            if reply is None and not last:
                return n, "silent", None
        if reply is None:  # the first delivery never decided anything: it failed, and said so
            return n, "lost", self.config.text("error")
        if reply.text is not None:
            return n, "reply", reply.text
        if n > 1 and reply.target == msgid:
            self.reader.ensure_started(openid, msgid)
        budget = (self.last_wait if last else self.hold) - (time.monotonic() - started)
        event = self.answers.wait(reply.target, max(budget, 0.0))
        if event is None and not last:
            return n, "silent", None
        if reply.target != msgid:
            outcome = "fetched"  # this message delivered an earlier answer
        else:
            outcome = "fallback" if event is None else "answered" if event["state"] == "done" else "error"
        return n, outcome, self.reader.show(openid, msgid, reply, event)
