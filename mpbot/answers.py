"""An answer as its events tell it: the question, the text so far, and how it ended; and
``Answers``, where every answer's events are kept.

Each MsgId that asks the model has a stream of events, appended in this order:

- ``{"state": "question", "text": q, "queued": bool, "sid": s}``: written when the question is
  taken; ``queued`` when it waits for the subscriber's previous answer; ``sid`` the session whose
  history it is asked with.
- ``{"state": "started"}``: the model call began (again, if a worker died: the text so far
  starts over).
- ``{"state": "heard", "text": t}``: a voice message was transcribed; ``t`` is its question now.
- ``{"state": "delta", "text": t}``: more of the answer (think blocks already removed); rarely
  ``{"state": "snapshot", "text": t}``, the whole text so far, when it did not simply grow.
- one final event: ``{"state": "done", "text": full}`` or ``{"state": "error", "kind": k}``
  (after which the text so far is still what was streamed, except for ``banned``: withdrawn).
"""

import time
from dataclasses import dataclass
from typing import Any

from .store import START

FINAL = ("done", "error")


@dataclass
class Answer:
    question: str | None = None
    sid: str | None = None
    queued: bool = False
    started: bool = False
    text: str = ""
    final: dict[str, Any] | None = None
    exists: bool = False

    @property
    def done(self) -> bool:
        return bool(self.final) and self.final["state"] == "done"

    @property
    def failed(self) -> bool:
        return bool(self.final) and self.final["state"] == "error"

    @property
    def state(self) -> str:
        """queued, generating, done, error, or gone (nothing stored: never asked, or expired)."""
        if self.final:
            return self.final["state"]
        if not self.exists:
            return "gone"
        return "generating" if self.started or not self.queued else "queued"

    def apply(self, event: dict[str, Any]) -> None:
        self.exists = True
        state = event.get("state")
        if state == "question":
            self.question = event.get("text")
            self.sid = event.get("sid")
            self.queued = bool(event.get("queued"))
        elif state == "started":
            self.started = True
            self.text = ""
        elif state == "heard":
            self.question = event.get("text")
        elif state == "delta":
            self.text += event.get("text", "")
        elif state == "snapshot":
            self.text = event.get("text", "")
        elif state in FINAL:
            self.final = event
            if state == "done":
                self.text = event.get("text", "")
            elif event.get("kind") == "banned":
                self.text = ""  # withdrawn: nothing of it is shown anywhere


def fold(events) -> Answer:
    answer = Answer()
    for event in events:
        answer.apply(event)
    return answer


class Answers:
    """Every answer's stream of events, in the store (``keys.answer``), kept ``MPBOT_ANSWER_TTL``.
    Readers read a stream without consuming it, from a cursor, so any number of deliveries and
    pages, on any process, see the same answer grow."""

    def __init__(self, config, store, keys) -> None:
        self.store = store
        self.keys = keys
        self.ttl = config.MPBOT_ANSWER_TTL

    def publish(self, msgid: str, event: dict[str, Any]) -> None:
        self.store.append(self.keys.answer(msgid), event, self.ttl)

    def read(self, msgid: str, after: str = START, timeout: float = 0) -> tuple[list[dict[str, Any]], str]:
        """The events after the cursor ``after``, and the cursor past them; with a ``timeout``,
        waits until at least one exists or time is up."""
        return self.store.read(self.keys.answer(msgid), after, timeout)

    def get(self, msgid: str) -> Answer:
        return fold(self.read(msgid)[0])

    def wait(self, msgid: str, timeout: float) -> dict[str, Any] | None:
        """The final event of ``msgid``: at once if it exists, else as soon as it is published,
        or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        cursor = START
        while True:
            events, cursor = self.read(msgid, cursor, deadline - time.monotonic())
            for event in events:
                if event.get("state") in FINAL:
                    return event
            if time.monotonic() >= deadline:
                return None
