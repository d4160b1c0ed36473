"""An answer as its events tell it: the question, the text so far, and how it ended.

Each MsgId that asks the model has a stream of events, appended in this order:

- ``{"state": "question", "text": q, "queued": bool, "sid": s}``: written when the question is
  taken; ``queued`` when it waits for the subscriber's previous answer; ``sid`` the session whose
  history it is asked with.
- ``{"state": "started"}``: the model call began (again, if a worker died: the text so far
  starts over).
- ``{"state": "delta", "text": t}``: more of the answer (think blocks already removed); rarely
  ``{"state": "snapshot", "text": t}``, the whole text so far, when it did not simply grow.
- one final event: ``{"state": "done", "text": full}`` or ``{"state": "error", "kind": k}``
  (after which the text so far is still what was streamed, except for ``banned``: withdrawn).
"""

from dataclasses import dataclass
from typing import Any

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
