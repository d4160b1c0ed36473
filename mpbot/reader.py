"""What each subscriber reads in the chat, and the order their questions run in.

One JSON document per subscriber, changed only through ``store.update_reader`` (atomically)::

    {"queue": [entry, ...], "replies": {msgid: plan, ...}}

``queue`` holds the subscriber's answers not yet read in the chat, oldest first. An entry has
``id`` (the question's MsgId), ``t`` (when it was asked), ``mode``, ``status``, and how far the
chat has shown it (``offset`` into the chat text, ``part`` shown so far, ``shown``: a digest of
the text shown, to check that the finished answer still begins with it).

- ``mode``: ``new`` while the question's own deliveries are in WeChat's window (they will show
  it); ``fallback`` once the window ended before the answer was shown whole: the subscriber's
  next message shows it, whatever that message is; ``reading``: shown part by part, ``继续``
  shows the next part, and a new question leaves the rest on the answer's page.
- ``status``: ``queued`` (waits for the subscriber's previous question: one model call per
  subscriber at a time; it holds ``sid`` and ``q`` until it starts), ``running``, ``finished``.

``replies`` remembers, per MsgId, what that message's deliveries answer with: a text, or a
``target`` answer to show (with a ``note``), and once shown the ``shown`` text, so that every
delivery of one message says the same and reading moves on once per message.

With push on (``MPBOT_PUSH``, verified accounts), ``push`` holds when the subscriber last wrote
(``t``), the messages pushed since (``sent``: WeChat allows 5 within 48 hours) and, while one
process is pushing to them, its ``owner`` id and the time it last moved (``at``). A finished
answer whose window has ended (mode ``fallback``) is pushed part by part, in order, by the one
process that holds that claim; the subscriber's next message fetches whatever could not be pushed.
"""

import functools
import hashlib
import logging
import secrets
import time

from .answers import fold
from .formatting import cut_clean, markdown_to_text, paginate, skip_space, utf8_len
from .logs import user_tag
from .push import PushError

log = logging.getLogger(__name__)

NOTES = ("queued", "hint")
# A push claim not renewed for this long belongs to a process that died: it lapses.
CLAIM_TTL = 60.0
# The first pushed message of an answer waits this long after the reply that said it is coming,
# so that the two arrive in that order.
AFTER_REPLY = 1.0
_STALE = object()


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Reader:
    def __init__(self, config, store, runner, links, pusher=None) -> None:
        self.config = config
        self.store = store
        self.runner = runner
        self.links = links
        self.pusher = pusher  # None: push is off (not a verified account, or MPBOT_PUSH unset)
        self.max_bytes = config.MPBOT_REPLY_MAX_BYTES
        # Parts are cut to one fixed size, whatever note a reply carries, so that "(2/3)" means
        # the same in every reply.
        self.part_bytes = self.max_bytes - max(utf8_len(config.text(f"note_{note}")) for note in NOTES)
        self.window_span = config.MPBOT_DELIVERIES * config.MPBOT_WECHAT_TIMEOUT + 1
        # A running entry older than this lost its job (a worker killed mid-call): do not let it
        # hold the subscriber's next questions back.
        self.stale_after = 2 * config.MPBOT_LLM_TIMEOUT + 60
        # Replies decided per MsgId are needed only while its deliveries last.
        self.memo_ttl = self.window_span + 60

    # --- helpers over the document ---------------------------------------------------------

    def _replies(self, state: dict, now: float) -> dict:
        replies = state.setdefault("replies", {})
        for msgid in [m for m, plan in replies.items() if now - plan["t"] > self.memo_ttl]:
            del replies[msgid]
        return replies

    def _mode(self, entry: dict, now: float) -> str:
        # Deliveries that never came back (WeChat gave up, a process died) still leave the
        # answer to the next message.
        if entry["mode"] == "new" and now - entry["t"] > self.window_span:
            return "fallback"
        return entry["mode"]

    def _running(self, entry: dict, now: float) -> bool:
        return entry["status"] == "running" and now - entry.get("started_at", entry["t"]) < self.stale_after

    def _heard(self, state: dict, now: float) -> None:
        """The subscriber wrote: WeChat allows another 5 pushed messages within 48 hours."""
        if self.pusher is not None:
            state.setdefault("push", {}).update(t=now, sent=0)

    def _push_left(self, state: dict, now: float) -> int:
        push = state.get("push") or {}
        if now - push.get("t", 0) >= self.config.MPBOT_PUSH_WINDOW:
            return 0
        return max(0, self.config.MPBOT_PUSH_PER_MESSAGE - push.get("sent", 0))

    def _pushable(self, entry: dict, now: float) -> bool:
        """An answer the pusher delivers: finished, and its own window is over."""
        return (
            self.pusher is not None
            and entry["status"] == "finished"
            and self._mode(entry, now) == "fallback"
            and not entry.get("unpushable")
        )

    def _claimed(self, state: dict, now: float) -> bool:
        push = state.get("push") or {}
        return bool(push.get("owner")) and now - push.get("at", 0) < CLAIM_TTL

    def _take_next(self, queue: list, now: float) -> tuple[str, str, str] | None:
        """The job to start now: the oldest waiting question, when none is running."""
        if any(self._running(e, now) for e in queue):
            return None
        waiting = next((e for e in queue if e["status"] == "queued"), None)
        if waiting is None:
            return None
        waiting.update(status="running", started_at=now)
        return waiting["id"], waiting.pop("sid"), waiting.pop("q")

    # --- the first delivery of a message decides what the message gets ---------------------

    def plan_text(self, openid: str, msgid: str, text: str) -> dict:
        """The message is answered with ``text`` (a command's reply)."""
        now = time.time()

        def change(state):
            replies = self._replies(state, now)
            if msgid not in replies:
                self._heard(state, now)
            return replies.setdefault(msgid, {"text": text, "t": now})

        return self.store.update_reader(openid, change)

    def plan_read(
        self, openid: str, msgid: str, question: str | None = None, sid: str | None = None, otherwise: str = ""
    ) -> dict:
        """A question (``sid`` set when the subscriber is in a session) or, with no question,
        ``继续`` or a message the bot cannot answer (``otherwise`` is its reply). The message shows
        the oldest answer the subscriber has not read yet, if any, else its own answer; a
        question is taken either way and runs when the subscriber's previous one has finished."""
        now = time.time()
        ask = question is not None and sid is not None

        def change(state):
            replies = self._replies(state, now)
            if msgid in replies:
                return replies[msgid], None, None
            self._heard(state, now)
            queue = state.setdefault("queue", [])
            if question is not None:
                # A new question: the subscriber moved on from an answer read part by part (the
                # rest stays on its page). Answers they have not seen at all are still shown.
                queue[:] = [e for e in queue if self._mode(e, now) != "reading"]
            pushing = self._claimed(state, now)  # those answers are on their way: not shown twice
            head = next(
                (
                    e
                    for e in queue
                    if self._mode(e, now) in ("fallback", "reading") and not (pushing and self._pushable(e, now))
                ),
                None,
            )
            entry = None
            if ask:
                if sum(e["status"] == "queued" for e in queue) >= self.config.MPBOT_MAX_QUEUED:
                    replies[msgid] = {"text": self.config.text("too_many"), "t": now}
                    return replies[msgid], None, None
                entry = {"id": msgid, "t": now, "mode": "new", "offset": 0, "part": 0}
                entry.update(status="queued", sid=sid, q=question)
                queue.append(entry)
            # Usually the new question; after a job that died, the one that waited behind it.
            job = self._take_next(queue, now)
            if head is not None:
                plan = {"target": head["id"], "note": "" if question is None else "queued" if ask else "hint"}
                if entry is not None:  # this message shows the earlier answer: its own comes next
                    entry["mode"] = "fallback"
            elif entry is not None:
                plan = {"target": msgid, "note": ""}
            else:
                plan = {"text": self.config.text("hint") if question is not None else otherwise}
            replies[msgid] = {**plan, "t": now}
            return replies[msgid], entry, job

        plan, entry, job = self.store.update_reader(openid, change)
        if entry is not None:
            queued = job is None or job[0] != msgid
            self.store.publish(msgid, {"state": "question", "text": question, "queued": queued, "sid": sid})
        if job is not None:
            self.runner.submit(*job, openid)
        return plan

    def ensure_started(self, openid: str, msgid: str) -> None:
        """A later delivery of a question: if its job should be running but was never enqueued
        (the process that took the first delivery died between the two), enqueue it now. RQ's
        unique job id keeps it to one job."""
        answer = self.store.answer(msgid)
        if answer.final is not None or answer.started or answer.question is None:
            return
        entry = next((e for e in (self.store.reader(openid) or {}).get("queue", []) if e["id"] == msgid), None)
        if entry is None or entry["status"] != "running" or self.runner.exists(msgid):
            return
        log.warning("msgid=%s: its job was never enqueued (did a web process die?); enqueueing it now", msgid)
        self.runner.submit(msgid, answer.sid, answer.question, openid)

    def plan_of(self, openid: str, msgid: str, timeout: float = 1.0) -> dict | None:
        """What a later delivery found the first one decided (None if it never did: it failed)."""
        deadline = time.monotonic() + timeout
        while True:
            plan = ((self.store.reader(openid) or {}).get("replies") or {}).get(msgid)
            if plan is not None or time.monotonic() >= deadline:
                return plan
            time.sleep(0.05)

    # --- a delivery that has something to show ---------------------------------------------

    def show(self, openid: str, msgid: str, plan: dict, final: dict | None = None) -> str:
        """The reply for ``msgid``: its target answer, whole, the next part, or what exists so
        far. Decided once per message and remembered; reading moves on with it. ``final``, the
        answer's final event when the caller has it, carries the whole text: no need to read it."""
        target = plan["target"]
        for attempt in range(2):
            answer = fold([final]) if final is not None else self.store.answer(target)
            unfinished = not (answer.done or answer.failed or answer.state == "gone")
            push = unfinished and self._push_available()
            now = time.time()
            show = functools.partial(
                self._show, msgid=msgid, plan=plan, answer=answer, push=push, now=now, recheck=attempt == 0
            )
            text = self.store.update_reader(openid, show)
            if text is not _STALE:
                return text
            final = None  # the answer was finished after it was read: read it again
        raise AssertionError("unreachable: the second attempt always renders")

    def _show(self, state: dict, *, msgid: str, plan: dict, answer, push: bool, now: float, recheck: bool):
        target = plan["target"]
        queue = state.setdefault("queue", [])
        entry = next((e for e in queue if e["id"] == target), None)
        memo = self._replies(state, now).setdefault(msgid, {**plan, "t": now})
        if "shown" in memo:
            return memo["shown"]
        unfinished = not (answer.done or answer.failed or answer.state == "gone")
        if recheck and unfinished and entry is not None and entry["status"] == "finished":
            return _STALE
        if entry is None:  # no longer tracked (after /stop): show it from the start
            entry = {"id": target, "mode": "new", "offset": 0, "part": 0}
        text = self._render(entry, answer, plan.get("note", ""), push=push, now=now)
        if entry.pop("read", False) and entry in queue:
            queue.remove(entry)
        memo["shown"] = text
        return text

    def _push_available(self) -> bool:
        return self.pusher is not None and self.pusher.available()

    def _render(
        self, entry: dict, answer, note_key: str, more_key: str = "more", push: bool = False, now: float = 0.0
    ) -> str:
        """The next message that shows ``entry``'s answer, moving the entry on. ``more_key``: the
        text after a part that is not the last; ``push``: an unfinished answer will be pushed."""
        text_of = self.config.text
        note = text_of(f"note_{note_key}") if note_key else ""
        url = self.links.url(entry["id"])
        if answer.failed or answer.state == "gone":
            entry["read"] = True
            message = self.config.error_text(answer.final["kind"]) if answer.failed else text_of("gone")
            return message + note
        text = markdown_to_text(answer.text)
        if entry["offset"] and entry.get("shown") != _digest(text[: entry["offset"]]):
            # The finished text does not begin with what was shown while it was being written
            # (rare: Markdown that changed meaning as it grew). Start again from the top.
            entry.update(offset=0, part=0)
        if answer.done:
            if entry["part"] == 0 and utf8_len(text) + utf8_len(note) <= self.max_bytes:
                entry["read"] = True
                return text + note
            more = utf8_len(text_of("more", part=99, parts=99, url=url))
            spans = paginate(text, entry["offset"], self.part_bytes - more)
            if not spans:  # all of it was shown while it was being written
                entry["read"] = True
                return text_of("answer_end") + note
            part, parts = entry["part"] + 1, entry["part"] + len(spans)
            start, end = spans[0]
            if len(spans) == 1:
                entry["read"] = True
                return text[start:end] + text_of("last_part", part=part, parts=parts) + note
            entry.update(offset=end, part=part, mode="reading", shown=_digest(text[:end]))
            return text[start:end] + text_of(more_key, part=part, parts=parts, url=url) + note
        entry["mode"] = "fallback"
        queued = answer.state == "queued"
        if push:  # it will come by itself, whole, when it is finished
            entry["fallback_at"] = now
            return text_of("fallback_queued_push" if queued else "fallback_push", url=url) + note
        # Not finished: what exists so far, then the link.
        start = skip_space(text, entry["offset"])
        suffix = text_of("partial", url=url)
        head = cut_clean(text[start:], self.part_bytes - utf8_len(suffix)) if start < len(text) else ""
        if not head:
            return text_of("fallback_queued" if queued else "fallback", url=url) + note
        end = start + len(head)
        entry.update(offset=end, part=entry["part"] + 1, shown=_digest(text[:end]))
        return head + suffix + note

    # --- the order questions run in --------------------------------------------------------

    def finished(self, openid: str, msgid: str) -> None:
        """``msgid``'s job ended: start the subscriber's next question, if one is waiting, and
        push the answer if its window is over (and push is on)."""
        now = time.time()
        push = self._push_available()

        def change(state):
            queue = state.setdefault("queue", [])
            for entry in queue:
                if entry["id"] == msgid:
                    entry["status"] = "finished"
            owner = None
            if push and not self._claimed(state, now) and self._push_left(state, now):
                if any(self._pushable(e, now) for e in queue):
                    owner = secrets.token_hex(8)
                    state["push"].update(owner=owner, at=now)
            return self._take_next(queue, now), owner

        job, owner = self.store.update_reader(openid, change)
        if job is not None:
            self.runner.submit(*job, openid)
        if owner is not None:
            try:
                self._push(openid, owner)
            except Exception:  # the claim lapses; the next message fetches what was not pushed
                log.exception("pushing to user=%s stopped", user_tag(openid))

    # --- pushing (verified accounts) -------------------------------------------------------

    def _push(self, openid: str, owner: str) -> None:
        """Push every finished answer whose window is over, oldest first, part by part, while
        this process holds the subscriber's push claim and WeChat allows more messages."""
        while True:
            now = time.time()
            state = self.store.reader(openid) or {}
            if (state.get("push") or {}).get("owner") != owner:
                return  # the claim lapsed and another process took over
            left = self._push_left(state, now)
            entry = next((e for e in state.get("queue", []) if self._pushable(e, now)), None) if left else None
            if entry is None:
                if self.store.update_reader(openid, functools.partial(self._release, owner=owner, now=now)):
                    return
                continue  # another answer became pushable meanwhile
            answer = self.store.answer(entry["id"])
            if not (answer.done or answer.failed or answer.state == "gone"):
                # Its job ended without writing its end (Redis failed it): leave it to the next
                # message, and go on with the others.
                self.store.update_reader(openid, functools.partial(self._unpushable, msgid=entry["id"]))
                continue
            draft = dict(entry)
            text = self._render(draft, answer, "", more_key="push_more" if left > 1 else "more")
            if not draft.get("read"):
                # Pushed on while messages are left; past that, 继续 reads on (its message allows more).
                draft["mode"] = "fallback" if left > 1 else "reading"
            # (At most AFTER_REPLY: the reply's time is another host's clock.)
            time.sleep(min(AFTER_REPLY, max(0.0, entry.get("fallback_at", 0) + AFTER_REPLY - time.time())))
            try:
                self.pusher.send(openid, text)
            except PushError as exc:
                failed = functools.partial(self._release, owner=owner, now=time.time(), failure=exc.reason)
                self.store.update_reader(openid, failed)
                return
            pushed = functools.partial(self._pushed, owner=owner, before=entry, after=draft)
            if not self.store.update_reader(openid, pushed):
                return

    def _pushed(self, state: dict, *, owner: str, before: dict, after: dict) -> bool:
        """Record one pushed message: the entry moved on (or was read whole). Whether this
        process still holds the claim (and may push the next one)."""
        push = state.setdefault("push", {})
        push["sent"] = push.get("sent", 0) + 1
        queue = state.get("queue", [])
        entry = next((e for e in queue if e["id"] == before["id"]), None)
        if entry is not None and (entry["offset"], entry["part"]) == (before["offset"], before["part"]):
            if after.get("read"):
                queue.remove(entry)
            else:
                entry.update(after)
        if push.get("owner") != owner:
            return False
        push["at"] = time.time()
        return True

    def _unpushable(self, state: dict, *, msgid: str) -> None:
        for entry in state.get("queue", []):
            if entry["id"] == msgid:
                entry["unpushable"] = True

    def _release(self, state: dict, *, owner: str, now: float, failure: str | None = None) -> bool:
        """Give up the push claim, unless (with no failure) there is more to push. Whether it
        was given up (or was no longer ours)."""
        push = state.get("push") or {}
        if push.get("owner") != owner:
            return True
        if failure is None and self._push_left(state, now):
            if any(self._pushable(e, now) for e in state.get("queue", [])):
                return False
        push["owner"] = None
        if failure == "quota_used":  # WeChat counted differently: no more until they write
            push["sent"] = self.config.MPBOT_PUSH_PER_MESSAGE
        elif failure == "window_expired":
            push["t"] = 0
        return True

    def drop(self, openid: str) -> None:
        """/stop and unsubscribe: forget what is unread; questions not started are cancelled
        (their pages say so). Answers being written still finish on their pages."""

        def change(state):
            cancelled = [e["id"] for e in state.get("queue", []) if e["status"] == "queued"]
            state["queue"] = []
            return cancelled

        for msgid in self.store.update_reader(openid, change):
            self.store.publish(msgid, {"state": "error", "kind": "cancelled"})
