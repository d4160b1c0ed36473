"""What each subscriber reads in the chat, and the order their questions run in: a state machine
with no I/O (after h11's ``_state.py``).

Everything that decides what a delivery replies lives in this file. The caller (``reader.py``)
loads a subscriber's ``Inbox``, applies one transition with the time ``now``, saves the inbox
atomically and carries out the effects the transition returned (start a job, write an event on
an answer's stream, push). Nothing here reads a clock, a store or the network, so the tests drive
it with events alone (``tests/test_inbox.py``).

The inbox holds the subscriber's questions whose answers they have not read whole, oldest first,
and, per MsgId, the reply that message's deliveries give. Each question is in two machines at
once: its **status** (the model call) and its **mode** (how far the chat has shown the answer).

Status: ``queued`` waits for the subscriber's previous question (one model call per subscriber
at a time; it keeps the session id and the text until it starts); ``running``; ``lost`` when its
job ran past every deadline without finishing (a worker killed mid-call: the questions behind it
go ahead); ``finished``.

Mode: ``new`` while the question's own deliveries are in WeChat's window (they will show it);
``fallback`` once the window ended before it was shown whole (the subscriber's next message
shows it, whatever that message is; with push on, a process pushes it); ``reading`` once shown
part by part (``继续`` shows the next part; a new question leaves the rest on its page).
``read`` is where a question leaves the inbox.

The transitions that one event triggers are the tables ``STATUS`` and ``MODES``; ``diagram()``
draws them, and the README's diagram is that drawing (a test keeps the two the same).
"""

import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .formatting import cut_clean, markdown_to_text, no_anchors, paginate, skip_space, utf8_len

if TYPE_CHECKING:  # only its type: answers.py also reads the store
    from .answers import Answer

VERSION = 1
QUOTE_CHARS = 16  # of a question, quoted before an answer that a later message shows


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    LOST = "lost"
    FINISHED = "finished"
    CANCELLED = "cancelled"  # leaves the inbox (never stored)


class Mode(StrEnum):
    NEW = "new"
    FALLBACK = "fallback"
    READING = "reading"
    READ = "read"  # leaves the inbox (never stored)


class Event(StrEnum):
    # The model call.
    START = "start"  # its turn came: the job starts
    TIME_UP = "time up"  # still running long past every deadline: its job died
    FINISH = "finish"  # the job ended (the answer is done or failed)
    # What the subscriber was shown.
    WINDOW_ENDED = "window ended"  # its own deliveries are over
    EARLIER_SHOWN = "earlier shown"  # its message showed an earlier answer instead
    SHOWN_WHOLE = "shown whole"  # the whole answer (or why it failed) in one message
    SHOWN_PART = "shown a part"  # a part, and more to come with 继续
    SHOWN_LAST = "shown the last part"
    SHOWN_SO_FAR = "shown so far"  # unfinished: the text so far, and the link
    SHOWN_LINK = "shown the link"  # unfinished, nothing to show yet: the link (or: it will be pushed)
    PUSHED_PART = "pushed a part"  # push on: a part pushed, and WeChat allows more
    PUSHED_TO_LIMIT = "pushed to the limit"  # a part pushed, the last WeChat allows: 继续 reads on
    NEW_QUESTION = "new question"  # the subscriber asked something else
    STOP = "stop"  # /stop or unsubscribe


# state -> event -> new state. An event missing from a state's row leaves that state as it is.
STATUS: dict[Status, dict[Event, Status]] = {
    Status.QUEUED: {Event.START: Status.RUNNING, Event.STOP: Status.CANCELLED},
    Status.RUNNING: {Event.FINISH: Status.FINISHED, Event.TIME_UP: Status.LOST},
    Status.LOST: {Event.FINISH: Status.FINISHED},
    Status.FINISHED: {},
}
_SHOWN = {
    Event.SHOWN_WHOLE: Mode.READ,
    Event.SHOWN_PART: Mode.READING,
    Event.SHOWN_LAST: Mode.READ,
    Event.SHOWN_SO_FAR: Mode.FALLBACK,
    Event.SHOWN_LINK: Mode.FALLBACK,
}
MODES: dict[Mode, dict[Event, Mode]] = {
    Mode.NEW: {Event.WINDOW_ENDED: Mode.FALLBACK, Event.EARLIER_SHOWN: Mode.FALLBACK, **_SHOWN, Event.STOP: Mode.READ},
    Mode.FALLBACK: {
        **_SHOWN,
        Event.PUSHED_PART: Mode.FALLBACK,
        Event.PUSHED_TO_LIMIT: Mode.READING,
        Event.STOP: Mode.READ,
    },
    # (Only a finished answer is read part by part: it is never shown "so far" again.)
    Mode.READING: {
        Event.SHOWN_WHOLE: Mode.READ,
        Event.SHOWN_PART: Mode.READING,
        Event.SHOWN_LAST: Mode.READ,
        Event.NEW_QUESTION: Mode.READ,
        Event.STOP: Mode.READ,
    },
}


def diagram() -> str:
    """The two machines as Mermaid state diagrams, drawn from the tables: each starts in its
    table's first state and ends in the states that lead nowhere."""
    lines = ["```mermaid", "stateDiagram-v2", "    direction LR"]
    for name, table in (("status", STATUS), ("mode", MODES)):
        lines.append(f"    state {name} {{")
        lines.append(f"        [*] --> {next(iter(table))}")
        ends = []
        for state, row in table.items():
            targets: dict[str, list[str]] = {}
            for event, target in row.items():
                targets.setdefault(target, []).append(event)
                if not table.get(target) and target not in ends:
                    ends.append(target)
            for target, events in targets.items():
                lines.append(f"        {state} --> {target}: {', '.join(events)}")
        lines.extend(f"        {end} --> [*]" for end in ends)
        lines.append("    }")
    lines.append("```")
    return "\n".join(lines)


class Note(StrEnum):
    """Added after an earlier answer that a message shows instead of its own reply."""

    NONE = ""
    QUEUED = "queued"  # the message was a question: it is answered next
    HINT = "hint"  # the message came outside a session


# --- effects: what the caller carries out --------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Run the model for this question now (one job per MsgId)."""

    msgid: str
    sid: str
    question: str


@dataclass(frozen=True)
class Announce:
    """Write the question as the first event of its answer's stream."""

    msgid: str
    question: str
    sid: str
    queued: bool  # it waits for the subscriber's previous question


@dataclass(frozen=True)
class Cancel:
    """End this question's answer as cancelled: it never ran."""

    msgid: str


@dataclass(frozen=True)
class PushLate:
    """This process holds the subscriber's push lease (``owner``): push their late answers."""

    owner: str


Effect = Start | Announce | Cancel | PushLate


class StaleAnswer(Exception):
    """The answer given to ``show`` is older than what the inbox knows (its job finished after
    it was read): read it again and show that."""


# --- the state ----------------------------------------------------------------------------------


@dataclass
class Question:
    """A question whose answer the subscriber has not read whole."""

    id: str  # its MsgId
    asked_at: float
    status: Status = Status.QUEUED
    sid: str | None = None  # kept while queued: the session it is asked in...
    text: str | None = None  # ...and the question
    started_at: float | None = None
    # How far the chat has shown the answer.
    mode: Mode = Mode.NEW
    offset: int = 0  # into the answer as plain text
    part: int = 0  # parts shown
    digest: str | None = None  # of the text shown: the finished answer must still begin with it
    announced_at: float | None = None  # when a reply said it would be pushed
    unpushable: bool = False  # its job ended without writing its end: the next message shows it


@dataclass
class Reply:
    """What every delivery of one message says, decided by its first delivery."""

    at: float
    text: str | None = None  # a fixed text (a command's reply, a refusal)...
    target: str | None = None  # ...or the answer (a MsgId) this message shows...
    note: Note = Note.NONE  # ...with this after it
    shown: str | None = None  # once shown, the text every later delivery repeats


@dataclass
class Push:
    """Customer-service messages (push on): what WeChat still allows, and who is pushing."""

    heard_at: float = 0.0  # the subscriber's last message: 5 messages allowed within 48 h of it
    sent: int = 0
    owner: str | None = None  # the process holding the push lease...
    renewed_at: float = 0.0  # ...and when it last renewed it


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Rules:
    """The settings the machine follows, and how it words and links its replies."""

    text: Callable[..., str]  # a TEXTS entry filled in (Config.text)
    error_text: Callable[[str], str]  # what a failed answer of a kind says (Config.error_text)
    link: Callable[[str, float], str]  # the answer page of a MsgId, made at ``now``
    max_bytes: int = 2047
    window: float = 16.0  # a message's deliveries are over this long after it was sent
    time_up: float = 300.0  # a running job this old has died
    remember: float = 76.0  # how long the reply decided for a MsgId is kept
    max_queued: int = 5
    push: bool = False
    push_per_message: int = 5
    push_window: float = 48 * 3600
    lease: float = 60.0  # a push lease not renewed for this long lapses (its process died)

    @classmethod
    def of(cls, config, link: Callable[[str, float], str]) -> "Rules":
        window = config.MPBOT_DELIVERIES * config.MPBOT_WECHAT_TIMEOUT + 1
        return cls(
            text=config.text,
            error_text=config.error_text,
            link=link,
            max_bytes=config.MPBOT_REPLY_MAX_BYTES,
            window=window,
            time_up=2 * config.MPBOT_LLM_TIMEOUT + 60,
            remember=window + 60,
            max_queued=config.MPBOT_MAX_QUEUED,
            push=bool(config.MPBOT_PUSH),
            push_per_message=config.MPBOT_PUSH_PER_MESSAGE,
            push_window=config.MPBOT_PUSH_WINDOW,
        )


@dataclass
class Inbox:
    rules: Rules = field(repr=False, compare=False)
    questions: list[Question] = field(default_factory=list)
    replies: dict[str, Reply] = field(default_factory=dict)
    read: dict[str, float] = field(default_factory=dict)  # answers read whole lately, and when
    push: Push | None = None

    # --- queries ---------------------------------------------------------------------------

    def find(self, msgid: str) -> Question | None:
        return next((q for q in self.questions if q.id == msgid), None)

    def reply(self, msgid: str) -> Reply | None:
        return self.replies.get(msgid)

    def restart(self, msgid: str, answer: "Answer") -> Start | None:
        """A later delivery of a question found its answer not begun: the job to start again if
        it should be running (the process that took the first delivery may have died before it
        enqueued it; the caller checks that the job is really missing)."""
        question = self.find(msgid)
        if answer.final is not None or answer.started or answer.question is None or answer.sid is None:
            return None
        if question is None or question.status != Status.RUNNING:
            return None
        return Start(msgid, answer.sid, answer.question)

    def keep_for(self, idle: float, pending: float) -> float:
        """How long to keep this inbox after a change: ``pending`` while it holds an answer the
        subscriber has not read whole; else ``idle`` (the session's idle time), and never less
        than a MsgId's decided reply is remembered. An inbox that is forgotten starts empty, as
        for a new subscriber: the push quota restarts with the next message anyway."""
        if self.questions:
            return pending
        return max(idle, self.rules.remember)

    def holds(self, owner: str) -> bool:
        return self.push is not None and self.push.owner == owner

    def next_push(self, now: float) -> Question | None:
        """The oldest answer to push, while WeChat allows more messages."""
        self._tick(now)
        if not self._push_left(now):
            return None
        return next((q for q in self.questions if self._pushable(q)), None)

    # --- transitions: one subscriber message's first delivery ------------------------------

    def say(self, msgid: str, text: str, now: float) -> Reply:
        """The message is answered with ``text`` (a command's reply, a refusal)."""
        self._tick(now)
        replies = self._replies(now)
        if msgid not in replies:
            self._heard(now)
            replies[msgid] = Reply(at=now, text=text)
        return replies[msgid]

    def take(
        self, msgid: str, now: float, question: str | None = None, sid: str | None = None, otherwise: str = ""
    ) -> tuple[Reply, list[Effect]]:
        """A question (``sid`` set when the subscriber is in a session) or, with no question,
        ``继续`` or a message the bot cannot answer (``otherwise`` is its reply). The message shows
        the oldest answer the subscriber has not read yet, if any, else its own answer; a
        question is taken either way and runs when the subscriber's previous one has finished."""
        self._tick(now)
        replies = self._replies(now)
        if msgid in replies:
            return replies[msgid], []
        self._heard(now)
        ask = question is not None and sid is not None
        if question is not None:
            # A new question: the subscriber moved on from an answer read part by part (the rest
            # stays on its page). Answers they have not seen at all are still shown.
            for q in [q for q in self.questions if q.mode == Mode.READING]:
                self._move(q, Event.NEW_QUESTION, now)
        pushing = self._leased(now)  # those answers are on their way: not shown twice
        head = next(
            (
                q
                for q in self.questions
                if q.mode in (Mode.FALLBACK, Mode.READING) and not (pushing and self._pushable(q))
            ),
            None,
        )
        entry = None
        if ask:
            if sum(q.status == Status.QUEUED for q in self.questions) >= self.rules.max_queued:
                replies[msgid] = Reply(at=now, text=self.rules.text("too_many"))
                return replies[msgid], []
            entry = Question(id=msgid, asked_at=now, sid=sid, text=question)
            self.questions.append(entry)
        # Usually the new question; after a job that died, the one that waited behind it.
        start = self._start_next(now)
        if head is not None:
            note = Note.NONE if question is None else Note.QUEUED if ask else Note.HINT
            replies[msgid] = Reply(at=now, target=head.id, note=note)
            if entry is not None:  # this message shows the earlier answer: its own comes next
                self._move(entry, Event.EARLIER_SHOWN, now)
        elif entry is not None:
            replies[msgid] = Reply(at=now, target=msgid)
        else:
            replies[msgid] = Reply(at=now, text=self.rules.text("hint") if question is not None else otherwise)
        effects: list[Effect] = []
        if entry is not None:
            queued = start is None or start.msgid != msgid
            effects.append(Announce(msgid, question, sid, queued))
        if start is not None:
            effects.append(start)
        return replies[msgid], effects

    # --- transitions: a delivery that shows an answer --------------------------------------

    def show(
        self, msgid: str, reply: Reply, answer: "Answer", now: float, push: bool = False, fresh: bool = False
    ) -> str:
        """The text for ``msgid``'s delivery: its target answer whole, the next part, or what
        exists so far. Decided once per message and remembered, so that every delivery says the
        same and reading moves on once. ``push``: an unfinished answer will be pushed when it is
        finished. Raises StaleAnswer when ``answer`` was read before its job finished (unless
        ``fresh``: it was read again after that)."""
        self._tick(now)
        memo = self._replies(now).setdefault(msgid, dataclasses.replace(reply, at=now))
        if memo.shown is not None:
            return memo.shown
        target = self.find(reply.target)
        finished = answer.final is not None or answer.state == "gone"
        if not fresh and not finished and target is not None and target.status == Status.FINISHED:
            raise StaleAnswer(reply.target)
        if target is None and reply.target in self.read and answer.done:
            # Read whole meanwhile, by another message sent while this one waited for it.
            memo.shown = self.rules.text("answer_end") + self._note(reply.note)
            return memo.shown
        if target is None:  # no longer tracked (after /stop): show it from the start
            target = Question(id=reply.target, asked_at=now, status=Status.FINISHED)
        quoted = msgid != target.id  # fetched by a later message: say which question it answers
        text, event = self._render(target, answer, reply.note, now, push=push, quoted=quoted)
        self._move(target, event, now)
        memo.shown = text
        return text

    # --- transitions: the model call -------------------------------------------------------

    def finish(self, msgid: str, now: float, owner: str | None = None) -> list[Effect]:
        """``msgid``'s job ended: start the subscriber's next question, if one waits, and (with
        ``owner``, a fresh id for this process, when push is available) take the push lease if
        there is something to push and no live process holds it."""
        self._tick(now)
        for q in self.questions:
            if q.id == msgid:
                q.status = STATUS[q.status].get(Event.FINISH, q.status)
        effects: list[Effect] = []
        start = self._start_next(now)
        if start is not None:
            effects.append(start)
        if owner is not None and self.push is not None and not self._leased(now) and self._push_left(now):
            if any(self._pushable(q) for q in self.questions):
                self.push.owner, self.push.renewed_at = owner, now
                effects.append(PushLate(owner))
        return effects

    def stop(self, now: float) -> list[Effect]:
        """/stop and unsubscribe: forget what is unread; questions not started are cancelled.
        Answers being written still finish on their pages."""
        effects: list[Effect] = []
        for q in list(self.questions):
            if STATUS[q.status].get(Event.STOP) == Status.CANCELLED:
                effects.append(Cancel(q.id))
            self._move(q, Event.STOP, now)
        return effects

    # --- transitions: pushing (push on) ----------------------------------------------------

    def render_push(self, question: Question, answer: "Answer", now: float) -> tuple[str, Question]:
        """The next pushed message of a finished answer, and the question as it will be once
        that message is sent (``mode`` READ: nothing left of it)."""
        left = self._push_left(now)
        after = copy.copy(question)
        more = "push_more" if left > 1 else "more"
        text, event = self._render(after, answer, Note.NONE, now, more=more, quoted=True)
        if event == Event.SHOWN_PART:
            # Pushed on while messages are left; past that, 继续 reads on (its message allows more).
            event = Event.PUSHED_PART if left > 1 else Event.PUSHED_TO_LIMIT
        after.mode = MODES[after.mode].get(event, after.mode)
        return text, after

    def pushed(self, owner: str, before: Question, after: Question, now: float) -> bool:
        """One message was pushed (``render_push``'s ``after``). Whether ``owner`` still holds the
        lease (and may push the next one); holding it renews it."""
        push = self._push_state()
        push.sent += 1
        current = self.find(before.id)
        if current is not None and (current.offset, current.part) == (before.offset, before.part):
            if after.mode == Mode.READ:
                self._leave(current, now, read=True)
            else:
                current.mode, current.offset, current.part, current.digest = (
                    after.mode,
                    after.offset,
                    after.part,
                    after.digest,
                )
        if push.owner != owner:
            return False
        push.renewed_at = now
        return True

    def unpushable(self, msgid: str) -> None:
        """Its job ended without writing the answer's end: leave it to the next message."""
        for q in self.questions:
            if q.id == msgid:
                q.unpushable = True

    def release(self, owner: str, now: float, failure: str | None = None) -> bool:
        """Give up the push lease, unless (with no ``failure``) there is more to push. Whether it
        was given up (or was no longer ``owner``'s)."""
        push = self.push
        if push is None or push.owner != owner:
            return True
        self._tick(now)
        if failure is None and self._push_left(now) and any(self._pushable(q) for q in self.questions):
            return False
        push.owner = None
        if failure == "quota_used":  # WeChat counted differently: no more until they write
            push.sent = self.rules.push_per_message
        elif failure == "window_expired":
            push.heard_at = 0.0
        return True

    # --- inside ----------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        """The transitions that time alone triggers."""
        for q in self.questions:
            if q.mode == Mode.NEW and now - q.asked_at > self.rules.window:
                self._move(q, Event.WINDOW_ENDED, now)
            started = q.started_at if q.started_at is not None else q.asked_at
            if q.status == Status.RUNNING and now - started >= self.rules.time_up:
                q.status = STATUS[q.status][Event.TIME_UP]

    def _move(self, question: Question, event: Event, now: float) -> None:
        mode = MODES[question.mode].get(event, question.mode)
        if mode == Mode.READ:
            self._leave(question, now, read=event in (Event.SHOWN_WHOLE, Event.SHOWN_LAST))
        question.mode = mode

    def _leave(self, question: Question, now: float, read: bool) -> None:
        """``question`` leaves the inbox; ``read``: it was read whole (not left or stopped)."""
        self.questions = [q for q in self.questions if q is not question]
        if read:
            self.read[question.id] = now

    def _note(self, note: Note) -> str:
        return self.rules.text(f"note_{note}") if note else ""

    def _replies(self, now: float) -> dict[str, Reply]:
        for msgid in [m for m, reply in self.replies.items() if now - reply.at > self.rules.remember]:
            del self.replies[msgid]
        for msgid in [m for m, at in self.read.items() if now - at > self.rules.remember]:
            del self.read[msgid]
        return self.replies

    def _start_next(self, now: float) -> Start | None:
        """The job to start now: the oldest waiting question, when none is running."""
        if any(q.status == Status.RUNNING for q in self.questions):
            return None
        waiting = next((q for q in self.questions if q.status == Status.QUEUED), None)
        if waiting is None:
            return None
        start = Start(waiting.id, waiting.sid or "", waiting.text or "")
        waiting.status, waiting.started_at = STATUS[waiting.status][Event.START], now
        waiting.sid = waiting.text = None
        return start

    def _push_state(self) -> Push:
        if self.push is None:
            self.push = Push()
        return self.push

    def _heard(self, now: float) -> None:
        """The subscriber wrote: WeChat allows another 5 pushed messages within 48 hours."""
        if self.rules.push:
            push = self._push_state()
            push.heard_at, push.sent = now, 0

    def _push_left(self, now: float) -> int:
        push = self.push
        if push is None or now - push.heard_at >= self.rules.push_window:
            return 0
        return max(0, self.rules.push_per_message - push.sent)

    def _pushable(self, question: Question) -> bool:
        """An answer the pusher delivers: finished, and its own window is over."""
        return (
            self.rules.push
            and question.status == Status.FINISHED
            and question.mode == Mode.FALLBACK
            and not question.unpushable
        )

    def _leased(self, now: float) -> bool:
        push = self.push
        return push is not None and bool(push.owner) and now - push.renewed_at < self.rules.lease

    def _render(
        self,
        question: Question,
        answer: "Answer",
        note: Note,
        now: float,
        more: str = "more",
        push: bool = False,
        quoted: bool = False,
    ) -> tuple[str, Event]:
        """The next message that shows ``question``'s answer, moving its position on, and the
        event it was for the question's mode. ``more``: the text after a part that is not the
        last; ``push``: an unfinished answer will be pushed; ``quoted``: the message is not the
        question's own, so before the first part it names the question."""
        text_of = self.rules.text
        after = self._note(note)
        url = self.rules.link(question.id, now)
        quote = self._quote(answer.question) if quoted and question.part == 0 else ""
        if answer.failed or answer.state == "gone":
            message = self.rules.error_text(answer.final["kind"]) if answer.failed else text_of("gone")
            return quote + message + after, Event.SHOWN_WHOLE
        text = markdown_to_text(answer.text)
        if question.offset and question.digest != _digest(text[: question.offset]):
            # The finished text does not begin with what was shown while it was being written
            # (rare: Markdown that changed meaning as it grew). Start again from the top.
            question.offset = question.part = 0
        max_bytes = self.rules.max_bytes
        label = text_of("answer_label")
        if answer.done:
            start = skip_space(text, question.offset)
            rest = text[start:]
            if question.part == 0 and utf8_len(quote + rest + label + after) <= max_bytes:
                if not rest:
                    return text_of("answer_end") + after, Event.SHOWN_LAST
                event = Event.SHOWN_WHOLE if start == 0 else Event.SHOWN_LAST
                return quote + rest + label + after, event
            # Only the first part carries the question's name and a note: the later parts get
            # every byte the label leaves. (The count is set by the first part shown; a later part
            # keeps to that plan, and carries a note only where the plan leaves room for it.)
            more_bytes = utf8_len(text_of("more", part=9999, parts=9999, url=url))
            last_bytes = utf8_len(text_of("last_part", part=9999, parts=9999) + label)
            first = quote + after if question.part == 0 else ""
            spans = paginate(
                text,
                question.offset,
                max_bytes - more_bytes,
                last_bytes=max_bytes - last_bytes,
                first_bytes=max_bytes - more_bytes - utf8_len(first),
            )
            suffix_bytes = last_bytes if len(spans) == 1 else more_bytes
            if (
                question.part
                and spans
                and utf8_len(text[slice(*spans[0])]) + suffix_bytes + utf8_len(after) > max_bytes
            ):
                after = ""
            if not spans:  # all of it was shown while it was being written
                return text_of("answer_end") + after, Event.SHOWN_LAST
            part, parts = question.part + 1, question.part + len(spans)
            start, end = spans[0]
            if len(spans) == 1:
                numbered = text_of("last_part", part=part, parts=parts)
                return quote + text[start:end] + numbered + label + after, Event.SHOWN_LAST
            question.offset, question.part, question.digest = end, part, _digest(text[:end])
            numbered = text_of(more, part=part, parts=parts, url=url)
            return quote + text[start:end] + numbered + after, Event.SHOWN_PART
        queued = answer.state == "queued"
        if push:  # it will come by itself, whole, when it is finished
            question.announced_at = now
            return text_of("fallback_queued_push" if queued else "fallback_push", url=url) + after, Event.SHOWN_LINK
        # Not finished: what exists so far, then the link. (Parts are numbered once the answer is
        # finished: the first numbered part a subscriber reads is （1/N）.)
        start = skip_space(text, question.offset)
        suffix = text_of("partial", url=url)
        room = self.rules.max_bytes - utf8_len(suffix + quote + after)
        head = cut_clean(text[start:], room) if start < len(text) else ""
        if not head:
            return text_of("fallback_queued" if queued else "fallback", url=url) + after, Event.SHOWN_LINK
        end = start + len(head)
        question.offset, question.digest = end, _digest(text[:end])
        return quote + head + suffix + after, Event.SHOWN_SO_FAR

    def _quote(self, question: str | None) -> str:
        """The first words of ``question``, as the answer's heading (TEXTS["answer_quote"])."""
        words = " ".join((question or "").split())
        if not words:
            return ""
        if len(words) > QUOTE_CHARS:
            words = words[: QUOTE_CHARS - 1].rstrip() + "…"
        return self.rules.text("answer_quote", question=no_anchors(words))


# --- the stored form ----------------------------------------------------------------------------
#
# Version 1 keeps the field names of the release before it (stored with no "v") and adds "read",
# so that processes of both releases can share a document during a rolling upgrade: each reads
# what the other wrote (and the previous release keeps the keys it does not know).


class CorruptInbox(ValueError):
    """A stored document that is not an inbox of a version this release reads."""


def load(raw: str | bytes | None, rules: Rules) -> Inbox:
    """The inbox a stored document holds (an empty one for None)."""
    try:
        return _load(json.loads(raw) if raw else {}, rules)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptInbox(f"{exc.__class__.__name__}: {exc}") from exc


def _load(doc: dict[str, Any], rules: Rules) -> Inbox:
    if doc.get("v", 0) > VERSION:
        raise CorruptInbox(f"version {doc['v']} is newer than this release's {VERSION}")
    inbox = Inbox(rules)
    for e in doc.get("queue") or []:
        inbox.questions.append(
            Question(
                id=str(e["id"]),
                asked_at=float(e["t"]),
                status=Status(e.get("status", Status.FINISHED)),
                sid=e.get("sid"),
                text=e.get("q"),
                started_at=e.get("started_at"),
                mode=Mode(e.get("mode", Mode.FALLBACK)),
                offset=int(e.get("offset", 0)),
                part=int(e.get("part", 0)),
                digest=e.get("shown"),
                announced_at=e.get("fallback_at"),
                unpushable=bool(e.get("unpushable", False)),
            )
        )
    for msgid, r in (doc.get("replies") or {}).items():
        inbox.replies[str(msgid)] = Reply(
            at=float(r["t"]),
            text=r.get("text"),
            target=r.get("target"),
            note=Note(r.get("note") or ""),
            shown=r.get("shown"),
        )
    inbox.read = {str(msgid): float(at) for msgid, at in (doc.get("read") or {}).items()}
    p = doc.get("push")
    if p:
        inbox.push = Push(
            heard_at=float(p.get("t") or 0),
            sent=int(p.get("sent") or 0),
            owner=p.get("owner"),
            renewed_at=float(p.get("at") or 0),
        )
    return inbox


def _question(q: Question) -> dict[str, Any]:
    e: dict[str, Any] = {"id": q.id, "t": q.asked_at, "mode": str(q.mode), "offset": q.offset, "part": q.part}
    e["status"] = str(q.status)
    optional = {
        "sid": q.sid,
        "q": q.text,
        "started_at": q.started_at,
        "shown": q.digest,
        "fallback_at": q.announced_at,
        "unpushable": q.unpushable or None,
    }
    e.update((key, value) for key, value in optional.items() if value is not None)
    return e


def _reply(r: Reply) -> dict[str, Any]:
    if r.text is not None:
        return {"text": r.text, "t": r.at}
    d: dict[str, Any] = {"target": r.target, "note": str(r.note), "t": r.at}
    if r.shown is not None:
        d["shown"] = r.shown
    return d


def dump(inbox: Inbox) -> str:
    doc: dict[str, Any] = {
        "v": VERSION,
        "queue": [_question(q) for q in inbox.questions],
        "replies": {msgid: _reply(r) for msgid, r in inbox.replies.items()},
    }
    if inbox.read:
        doc["read"] = inbox.read
    if inbox.push is not None:
        p = inbox.push
        doc["push"] = {"t": p.heard_at, "sent": p.sent, "owner": p.owner, "at": p.renewed_at}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
