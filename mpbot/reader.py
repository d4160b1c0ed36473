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
"""

import hashlib
import logging
import time

from .answers import fold
from .formatting import cut_clean, markdown_to_text, paginate, skip_space, utf8_len

log = logging.getLogger(__name__)

NOTES = ("queued", "hint")


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Reader:
    def __init__(self, config, store, runner, links) -> None:
        self.config = config
        self.store = store
        self.runner = runner
        self.links = links
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
        return self.store.update_reader(
            openid, lambda state: self._replies(state, now).setdefault(msgid, {"text": text, "t": now})
        )

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
            queue = state.setdefault("queue", [])
            if question is not None:
                # A new question: the subscriber moved on from an answer read part by part (the
                # rest stays on its page). Answers they have not seen at all are still shown.
                queue[:] = [e for e in queue if self._mode(e, now) != "reading"]
            head = next((e for e in queue if self._mode(e, now) in ("fallback", "reading")), None)
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
        answer = fold([final]) if final is not None else self.store.answer(target)
        now = time.time()

        def change(state):
            memo = self._replies(state, now).setdefault(msgid, {**plan, "t": now})
            if "shown" in memo:
                return memo["shown"]
            queue = state.setdefault("queue", [])
            entry = next((e for e in queue if e["id"] == target), None)
            if entry is None:  # no longer tracked (after /stop): show it from the start
                entry = {"id": target, "mode": "new", "offset": 0, "part": 0}
            text = self._render(entry, answer, plan.get("note", ""))
            if entry.pop("read", False) and entry in queue:
                queue.remove(entry)
            memo["shown"] = text
            return text

        return self.store.update_reader(openid, change)

    def _render(self, entry: dict, answer, note_key: str) -> str:
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
            return text[start:end] + text_of("more", part=part, parts=parts, url=url) + note
        # Not finished: what exists so far, then the link.
        entry["mode"] = "fallback"
        start = skip_space(text, entry["offset"])
        suffix = text_of("partial", url=url)
        head = cut_clean(text[start:], self.part_bytes - utf8_len(suffix)) if start < len(text) else ""
        if not head:
            return text_of("fallback_queued" if answer.state == "queued" else "fallback", url=url) + note
        end = start + len(head)
        entry.update(offset=end, part=entry["part"] + 1, shown=_digest(text[:end]))
        return head + suffix + note

    # --- the order questions run in --------------------------------------------------------

    def finished(self, openid: str, msgid: str) -> None:
        """``msgid``'s job ended: start the subscriber's next question, if one is waiting."""
        now = time.time()

        def change(state):
            queue = state.setdefault("queue", [])
            for entry in queue:
                if entry["id"] == msgid:
                    entry["status"] = "finished"
            return self._take_next(queue, now)

        job = self.store.update_reader(openid, change)
        if job is not None:
            self.runner.submit(*job, openid)

    def drop(self, openid: str) -> None:
        """/stop and unsubscribe: forget what is unread; questions not started are cancelled
        (their pages say so). Answers being written still finish on their pages."""

        def change(state):
            cancelled = [e["id"] for e in state.get("queue", []) if e["status"] == "queued"]
            state["queue"] = []
            return cancelled

        for msgid in self.store.update_reader(openid, change):
            self.store.publish(msgid, {"state": "error", "kind": "cancelled"})
