"""A subscriber's conversation played against ``mpbot.inbox`` alone, as ``reader.py``, ``window.py``
and the jobs would drive it, with no store, no HTTP and no clock: the inbox is saved as JSON after
every step (``load``/``dump``), the answers are lists of events, and time is a number the test
moves. ``test_inbox.py`` uses it for examples and for its hypothesis state machine.

It records what the subscriber sees (every reply and pushed message) and reads it back as a
subscriber would: which answer a text shows, which part, and the text of that part.
"""

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from mpbot.answers import fold
from mpbot.config import load_config
from mpbot.inbox import Announce, Cancel, PushLate, Rules, StaleAnswer, Start, dump, load
from mpbot.links import Links

T0 = 1_800_000_000.0
SID = "sid-1"
DELIVERIES = 3  # WeChat's, each 5 s apart...
TIMEOUT = 5.0
LAST_WAIT = 4.5  # ...and how long the last one waits before it replies with what exists
APPID = "wx0123456789abcdef"


def make_rules(push: bool = False, **overrides) -> Rules:
    settings = {"WECHAT_TOKEN": "token", "SECRET_KEY": "inbox-test-key", "PUBLIC_URL": "https://bot.example.com"}
    if push:
        settings.update(MPBOT_PUSH=True, WECHAT_APPID=APPID, WECHAT_APPSECRET="secret")
    config = load_config({**settings, **overrides})
    return Rules.of(config, link=Links(config).url)


def answer_text(sentences: int, width: int = 3) -> str:
    """A plain-text answer of ``sentences`` sentences, in paragraphs of five."""
    out = []
    for i in range(1, sentences + 1):
        out.append(f"第{i}句" + "字" * ((i * width) % 13) + "。")
        if i % 5 == 0 and i < sentences:
            out.append("\n\n")
    return "".join(out)


@dataclass
class Message:
    msgid: str
    kind: str  # question, next, stop
    at: float
    question: str | None = None
    waiting: bool = False  # a delivery waits for the answer it will show
    replied: int = 0  # the delivery (1-3) that replied first
    texts: list[str] = field(default_factory=list)  # what each delivery that replied said

    @property
    def deadline(self) -> float:
        """When the last delivery replies with what exists, if the answer is not finished."""
        return self.at + (DELIVERIES - 1) * TIMEOUT + LAST_WAIT

    def delivery_at(self, now: float) -> int:
        """Which of WeChat's deliveries is on at ``now`` (each is held until the next one comes)."""
        return min(DELIVERIES, int((now - self.at) // TIMEOUT) + 1)


@dataclass
class Seen:
    """What one text told the subscriber about one answer."""

    target: str
    body: str | None  # the answer's text it carried (None: only a link, or why it failed)
    part: int | None = None  # its label "(part/parts)"
    parts: int | None = None
    last: bool = False  # nothing of the answer is left to read after it
    failed: bool = False


class Conversation:
    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.text = rules.text
        self.doc: str | None = None
        self.now = T0
        self.streams: dict[str, list[dict]] = defaultdict(list)
        self.planned: dict[str, str] = {}  # the whole answer each question's job will write
        self.written: dict[str, int] = defaultdict(int)  # how much of it is on the stream
        self.starts: Counter = Counter()  # Start effects per MsgId
        self.running: list[str] = []  # jobs started and not ended
        self.messages: dict[str, Message] = {}
        self.couriers: list[str] = []  # push leases this "process" holds
        self.pushed: list[str] = []
        self.pushed_since: int = 0  # pushed since the subscriber's last message
        self.push_fails: str | None = None  # the reason every push fails with, or None
        self.seen: dict[str, list[Seen]] = defaultdict(list)  # per answer, in the order seen
        self.left: set[str] = set()  # answers left half-read for a new question (their link was shown)
        self.stopped: set[str] = set()  # answers forgotten by /stop
        self.in_session = True
        self._next_id = 1000

    # --- the coordinator, without I/O --------------------------------------------------------

    def inbox(self):
        return load(self.doc, self.rules)

    def apply(self, transition):
        inbox = load(self.doc, self.rules)
        result = transition(inbox)
        self.doc = dump(inbox)
        return result

    def carry_out(self, effects) -> None:
        for effect in effects:
            match effect:
                case Announce(msgid, question, sid, queued):
                    self.streams[msgid].append({"state": "question", "text": question, "queued": queued, "sid": sid})
                case Cancel(msgid):
                    self.streams[msgid].append({"state": "error", "kind": "cancelled"})
                case Start(msgid):
                    self.starts[msgid] += 1
                    assert self.starts[msgid] == 1, f"MsgId {msgid} started a second model call"
                    self.streams[msgid].append({"state": "started"})
                    self.running.append(msgid)
                case PushLate(owner):
                    self.couriers.append(owner)

    def new_msgid(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    # --- the subscriber ----------------------------------------------------------------------

    def ask(self, question: str, answer: str) -> Message:
        msgid = self.new_msgid()
        self.planned[msgid] = answer
        sid = SID if self.in_session else None
        message = Message(msgid, "question", self.now, question=question)
        self.messages[msgid] = message
        self._first(message, lambda inbox: inbox.take(msgid, self.now, question, sid))
        return message

    def next(self) -> Message:
        """继续 (or any message the bot has no reply of its own for)."""
        message = Message(self.new_msgid(), "next", self.now)
        self.messages[message.msgid] = message
        self._first(message, lambda inbox: inbox.take(message.msgid, self.now, otherwise=self.text("nothing_more")))
        return message

    def stop(self) -> Message:
        message = Message(self.new_msgid(), "stop", self.now)
        self.messages[message.msgid] = message
        for q in self.inbox().questions:
            self.stopped.add(q.id)
        self.carry_out(self.apply(lambda inbox: inbox.stop(self.now)))
        self._first(message, lambda inbox: (inbox.say(message.msgid, self.text("stopped"), self.now), []))
        return message

    def _first(self, message: Message, take) -> None:
        self.pushed_since = 0
        before = {q.id: q for q in self.inbox().questions}
        reply, effects = self.apply(take)
        after = {q.id for q in self.inbox().questions}
        for msgid, q in before.items():
            if msgid not in after and q.mode == "reading":
                self.left.add(msgid)  # a new question moved on from it: the rest is on its page
        self.carry_out(effects)
        message.waiting = True
        self.deliver(message)

    def deliver(self, message: Message, last: bool = False) -> str | None:
        """What a delivery of ``message`` replies, as window.py decides: the reply its first
        delivery decided, at once if it is a text or its answer is finished; otherwise the
        delivery waits (None), and the last one (``last``) replies with what exists."""
        reply = self.inbox().reply(message.msgid)
        assert reply is not None, "the first delivery decided nothing"
        if reply.text is not None:
            text = reply.text
        else:
            answer = fold(self.streams[reply.target])
            if answer.final is None and not last:
                return None  # it waits; WeChat delivers again after each 5 s
            push = self.rules.push and self.push_fails is None
            try:
                text = self.apply(lambda inbox: inbox.show(message.msgid, reply, answer, self.now, push))
            except StaleAnswer:
                answer = fold(self.streams[reply.target])
                text = self.apply(lambda inbox: inbox.show(message.msgid, reply, answer, self.now, push, True))
            if not message.texts:
                self.record(reply.target, text, note=reply.note)
        assert len(text.encode()) <= 2047, f"a reply of {len(text.encode())} bytes"
        if message.texts:
            assert text == message.texts[0], "a retried delivery got another reply"
        else:
            message.replied = message.delivery_at(self.now)
        message.waiting = False
        message.texts.append(text)
        return text

    def redeliver(self, message: Message) -> None:
        """WeChat delivers a message again although it was answered (the reply got lost)."""
        message.replied += 1
        self.deliver(message)

    def wait(self, seconds: float) -> None:
        """Time passes; the last delivery of each message still waiting replies at its deadline."""
        end = self.now + seconds
        for message in sorted(self.messages.values(), key=lambda m: m.deadline):
            if message.waiting and message.deadline <= end:
                self.now = max(self.now, message.deadline)
                self.deliver(message, last=True)
        self.now = end

    def wake(self, target: str) -> None:
        """``target``'s answer ended: every delivery waiting for it replies now."""
        for message in list(self.messages.values()):
            if message.waiting:
                reply = self.inbox().reply(message.msgid)
                if reply is not None and reply.target == target:
                    self.deliver(message)

    # --- the jobs ----------------------------------------------------------------------------

    def grow(self, msgid: str, chars: int) -> None:
        text = self.planned[msgid]
        start = self.written[msgid]
        end = min(len(text), start + chars)
        if end > start:
            self.streams[msgid].append({"state": "delta", "text": text[start:end]})
            self.written[msgid] = end

    def end(self, msgid: str, failed: str | None = None, woken_first: bool = True) -> None:
        """The job writes the answer's final event, which wakes the deliveries waiting for it, and
        then tells the inbox it has finished; the two race (``woken_first``: which comes first)."""
        event = {"state": "error", "kind": failed} if failed else {"state": "done", "text": self.planned[msgid]}
        self.streams[msgid].append(event)
        self.running.remove(msgid)
        if woken_first:
            self.wake(msgid)
        owner = f"owner-{msgid}" if self.rules.push and self.push_fails is None else None
        effects = self.apply(lambda inbox: inbox.finish(msgid, self.now, owner))
        if not woken_first:
            self.wake(msgid)
        self.carry_out(effects)

    # --- pushing -----------------------------------------------------------------------------

    def push_step(self, owner: str) -> None:
        """One message of ``push.Courier``'s loop, for the lease ``owner``."""
        inbox = self.inbox()
        if not inbox.holds(owner):
            self.couriers.remove(owner)
            return
        question = inbox.next_push(self.now)
        if question is None:
            if self.apply(lambda inbox: inbox.release(owner, self.now)):
                self.couriers.remove(owner)
            return
        answer = fold(self.streams[question.id])
        if answer.final is None:
            self.apply(lambda inbox: inbox.unpushable(question.id))
            return
        text, after = inbox.render_push(question, answer, self.now)
        if self.push_fails is not None:
            self.apply(lambda inbox: inbox.release(owner, self.now, self.push_fails))
            self.couriers.remove(owner)
            return
        assert len(text.encode()) <= 2047, f"a pushed message of {len(text.encode())} bytes"
        self.pushed.append(text)
        self.pushed_since += 1
        assert self.pushed_since <= self.rules.push_per_message, "more pushed than WeChat allows"
        self.record(question.id, text)
        if not self.apply(lambda inbox: inbox.pushed(owner, question, after, self.now)):
            self.couriers.remove(owner)

    # --- reading what was shown --------------------------------------------------------------

    def record(self, target: str, text: str, note: str = "") -> None:
        seen = self.parse(target, text, note)
        earlier = self.seen[target]
        if target in self.stopped:  # forgotten by /stop: a delivery still waiting shows it from the top
            earlier.append(seen)
            return
        if seen.part is not None:
            # Numbered from （1/N）: the text shown while the answer was being written is not a part.
            assert seen.part == len([s for s in earlier if s.part is not None]) + 1, (
                f"part {seen.part} of {target} after {len(earlier)} parts: the numbering shifted"
            )
            numbered = [s.parts for s in earlier if s.parts is not None]
            assert not numbered or numbered[-1] == seen.parts, "the number of parts changed"
        earlier.append(seen)
        if seen.last and not seen.failed:
            shown = "".join(s.body or "" for s in earlier)
            assert "".join(shown.split()) == "".join(self.planned[target].split()), (
                "the parts read do not join back into the answer"
            )

    def parse(self, target: str, text: str, note: str = "") -> Seen:
        if note:
            suffix = self.text(f"note_{note}")
            if text.endswith(suffix):
                text = text[: -len(suffix)]
            else:  # only a later part, whose plan was set before, may leave it out for want of room
                later = re.search(r"\n\n（(\d+)/\d+", text)
                assert later and int(later.group(1)) > 1, "the note is missing"
        asked = self.messages[target].question if target in self.messages else None
        quote = self.text("answer_quote", question=asked[:15]) if asked else None
        if quote and text.startswith(quote[:-3]):  # an answer fetched later names its question
            text = text[text.index("：\n\n") + 3 :]
        failures = {self.rules.error_text(kind) for kind in ("internal", "timeout", "cancelled")}
        if text in failures or text == self.text("gone"):
            return Seen(target, None, last=True, failed=True)
        if text == self.text("answer_end"):
            return Seen(target, None, last=True)
        if "还在生成中" in text or "排在它后面" in text:
            head, sep, _ = text.partition("\n……\n")
            return Seen(target, head if sep else None)
        labelled = re.fullmatch(r"(.*)\n\n（(\d+)/(\d+)( 完)?）(.*)", text, re.S)
        if labelled:
            body, part, parts, last, _rest = labelled.groups()
            return Seen(target, body, int(part), int(parts), last=bool(last))
        return Seen(target, text, last=True)

    def read_whole(self, target: str) -> bool:
        return any(s.last for s in self.seen[target])
