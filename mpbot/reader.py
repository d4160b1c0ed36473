"""What each subscriber reads, carried out: the I/O around ``inbox.py``.

``inbox.py`` decides everything, with no I/O. Here each step loads the subscriber's inbox (one
JSON document per subscriber, ``keys.reader``), applies one transition with the time, saves it
atomically (a compare-and-set in Redis, the store's lock in embedded mode) and then carries out the
effects the transition returned: the question's first event on its answer's stream, a job for the
runner, pushing late answers (``push.Courier``).
"""

import logging
import secrets
import time
from collections.abc import Callable
from typing import TypeVar

from .answers import fold
from .inbox import Announce, Cancel, CorruptInbox, Effect, Inbox, PushLate, Reply, Rules, StaleAnswer, Start, dump, load
from .logs import user_tag
from .push import Courier

log = logging.getLogger(__name__)
T = TypeVar("T")


class Inboxes:
    """The subscribers' inboxes in the store, kept ``MPBOT_ANSWER_TTL`` after their last change
    while they hold an answer not read whole, ``MPBOT_SESSION_TTL`` when nothing is pending."""

    def __init__(self, config, store, keys, rules: Rules) -> None:
        self.store = store
        self.keys = keys
        self.rules = rules
        self.pending_ttl = config.MPBOT_ANSWER_TTL
        self.idle_ttl = config.MPBOT_SESSION_TTL

    def load(self, openid: str) -> Inbox:
        """The inbox as it is now (to read; change it with ``apply``)."""
        return self._load(openid, self.store.get(self.keys.reader(openid)))

    def apply(self, openid: str, transition: Callable[[Inbox], T]) -> T:
        """Apply ``transition`` to the subscriber's inbox and save it, atomically (it may run
        again on a concurrent write: it must have no side effects); what it returned."""

        def change(raw: str | None) -> tuple[str, float, T]:
            inbox = self._load(openid, raw)
            result = transition(inbox)
            return dump(inbox), inbox.keep_for(self.idle_ttl, self.pending_ttl), result

        return self.store.update(self.keys.reader(openid), change)

    def _load(self, openid: str, raw: str | None) -> Inbox:
        try:
            return load(raw, self.rules)
        except CorruptInbox as exc:
            log.error("user=%s: stored inbox unreadable (%s): it starts again empty", user_tag(openid), exc)
            return load(None, self.rules)


class Reader:
    def __init__(self, config, store, keys, answers, runner, links, pusher=None) -> None:
        self.rules = Rules.of(config, link=links.url)
        self.inboxes = Inboxes(config, store, keys, self.rules)
        self.answers = answers
        self.runner = runner
        self.pusher = pusher  # None: push is off (not a verified account, or MPBOT_PUSH unset)
        self.courier = Courier(pusher, self.inboxes, answers) if pusher is not None else None

    # --- the first delivery of a message decides what the message gets ---------------------

    def say(self, openid: str, msgid: str, text: str) -> Reply:
        """The message is answered with ``text`` (a command's reply, a refusal)."""
        now = time.time()
        return self.inboxes.apply(openid, lambda inbox: inbox.say(msgid, text, now))

    def take(
        self, openid: str, msgid: str, question: str | None = None, sid: str | None = None, otherwise: str = ""
    ) -> Reply:
        """A question, ``继续``, or a message the bot cannot answer (see ``Inbox.take``)."""
        now = time.time()
        reply, effects = self.inboxes.apply(openid, lambda inbox: inbox.take(msgid, now, question, sid, otherwise))
        self._carry_out(openid, effects)
        return reply

    def decided(self, openid: str, msgid: str, timeout: float = 1.0) -> Reply | None:
        """What a later delivery finds the first one decided (None if it never did: it failed)."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.inboxes.load(openid).reply(msgid)
            if reply is not None or time.monotonic() >= deadline:
                return reply
            time.sleep(0.05)

    def ensure_started(self, openid: str, msgid: str) -> None:
        """A later delivery of a question: if its job should be running but was never enqueued
        (the process that took the first delivery died between the two), enqueue it now. RQ's
        unique job id keeps it to one job."""
        start = self.inboxes.load(openid).restart(msgid, self.answers.get(msgid))
        if start is None or self.runner.exists(msgid):
            return
        log.warning("msgid=%s: its job was never enqueued (did a web process die?); enqueueing it now", msgid)
        self.runner.submit(start, openid)

    # --- a delivery that has something to show ---------------------------------------------

    def show(self, openid: str, msgid: str, reply: Reply, final: dict | None = None) -> str:
        """The text for ``msgid``'s delivery (see ``Inbox.show``). ``final``, the answer's final
        event when the caller has it, carries the whole text: no need to read it (unless the
        answer is another message's, whose question the reply names)."""
        own = final is not None and reply.target == msgid
        answer = fold([final]) if own else self.answers.get(reply.target)
        try:
            return self._show(openid, msgid, reply, answer, fresh=False)
        except StaleAnswer:
            # The answer was finished after it was read: read it again.
            return self._show(openid, msgid, reply, self.answers.get(reply.target), fresh=True)

    def _show(self, openid: str, msgid: str, reply: Reply, answer, fresh: bool) -> str:
        push = answer.final is None and answer.state != "gone" and self._push_available()
        now = time.time()
        return self.inboxes.apply(openid, lambda inbox: inbox.show(msgid, reply, answer, now, push, fresh))

    # --- the model call ends; /stop --------------------------------------------------------

    def finished(self, openid: str, msgid: str) -> None:
        """``msgid``'s job ended: start the subscriber's next question, if one waits, and push
        late answers (push on)."""
        now = time.time()
        owner = secrets.token_hex(8) if self._push_available() else None
        self._carry_out(openid, self.inboxes.apply(openid, lambda inbox: inbox.finish(msgid, now, owner)))

    def drop(self, openid: str) -> None:
        """/stop and unsubscribe: forget what is unread; questions not started are cancelled."""
        now = time.time()
        self._carry_out(openid, self.inboxes.apply(openid, lambda inbox: inbox.stop(now)))

    def _push_available(self) -> bool:
        return self.pusher is not None and self.pusher.available()

    def _carry_out(self, openid: str, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case Announce(msgid, question, sid, queued):
                    event = {"state": "question", "text": question, "queued": queued, "sid": sid}
                    self.answers.publish(msgid, event)
                case Cancel(msgid):
                    self.answers.publish(msgid, {"state": "error", "kind": "cancelled"})
                case Start():
                    self.runner.submit(effect, openid)
                case PushLate(owner):
                    try:
                        self.courier.run(openid, owner)
                    except Exception:  # the lease lapses; the next message fetches what was not pushed
                        log.exception("pushing to user=%s stopped", user_tag(openid))
