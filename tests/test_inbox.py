"""What a subscriber reads, decided by ``mpbot.inbox`` alone: no Redis, no HTTP, no clock.

Examples first, then a hypothesis state machine that plays random conversations (questions,
retried deliveries, answers growing, finishing and failing, 继续, /stop, pushes) and checks what
the subscriber would notice, then the stored form (a golden file written by the release before
this one), then the module's own rules (no I/O; the README's diagram is the tables')."""

import ast
import json
import os
import re

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conftest import ROOT
from inbox_model import DELIVERIES, SID, Conversation, Seen, answer_text, make_rules
from mpbot import inbox as machine
from mpbot.answers import fold
from mpbot.inbox import Mode, Start, Status, dump, load
from mpbot.simulator import as_seen

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "reader-v0.json")
LONG = answer_text(150)  # about 4 KB: three parts


def conversation(**overrides) -> Conversation:
    return Conversation(make_rules(**overrides))


# --- examples ----------------------------------------------------------------------------------


def test_a_quick_answer_is_the_reply_and_leaves_the_inbox():
    c = conversation()
    m = c.ask("几点了", "三点。")
    assert m.texts == [] and m.waiting, "the delivery waits for the answer"
    c.grow(m.msgid, 99)
    c.end(m.msgid)
    assert m.texts == ["三点。"]
    assert c.inbox().questions == []
    assert c.starts[m.msgid] == 1


def test_an_inbox_with_nothing_pending_is_kept_only_as_long_as_a_session():
    c = conversation()
    week, session = 7 * 24 * 3600.0, 300.0
    m = c.ask("几点了", "三点。")
    assert c.inbox().keep_for(session, week) == week, "an answer on its way is kept"
    c.end(m.msgid)
    assert m.texts == ["三点。"]
    assert c.inbox().keep_for(session, week) == session, "read: kept as long as a session"
    assert c.inbox().keep_for(10.0, week) == c.rules.remember, "never shorter than a MsgId's reply is remembered"
    late = c.ask("慢问题", LONG)
    c.wait(c.rules.window + 1)  # its window ends unread: the next message fetches it
    assert late.texts and c.inbox().keep_for(session, week) == week


def test_every_delivery_of_a_message_says_the_same_and_reading_moves_on_once():
    c = conversation()
    m = c.ask("讲长一点", LONG)
    c.end(m.msgid)
    assert re.search(r"（1/3）发送「继续」看下一段", as_seen(m.texts[0]))
    c.redeliver(m)  # WeChat lost the reply and delivered again
    assert m.texts == [m.texts[0]] * 2
    assert c.inbox().find(m.msgid).part == 1
    assert "（2/3）" in c.next().texts[0]
    assert c.next().texts[0].endswith("（3/3 完）")
    assert c.next().texts[0] == c.text("nothing_more")
    assert c.read_whole(m.msgid)


def test_the_last_delivery_shows_the_text_so_far_and_continue_reads_on_from_there():
    c = conversation()
    m = c.ask("慢慢说", answer_text(40))
    c.grow(m.msgid, 150)
    c.wait(14)
    assert m.texts == [], "still waiting"
    c.wait(1)
    head, _, tail = m.texts[0].partition("\n……\n")
    assert head.endswith("。") and answer_text(40).startswith(head)
    assert "还在生成中" in tail
    assert c.inbox().find(m.msgid).mode == Mode.FALLBACK
    c.end(m.msgid)
    rest = c.next().texts[0]
    assert rest.startswith(c.text("answer_quote", question="慢慢说")), "a later message names the question"
    assert not re.search(r"（\d+/\d+", rest), "the rest fits in one message: no numbering"
    assert c.read_whole(m.msgid)


def test_every_part_of_a_very_long_answer_fits_in_a_reply_past_part_99():
    c = conversation()
    m = c.ask("写一本书", answer_text(9000))
    c.end(m.msgid)
    texts = [m.texts[0]]
    while "看下一段" in as_seen(texts[-1]):
        texts.append(c.next().texts[0])
    assert len(texts) > 100 and texts[-1].endswith(f"（{len(texts)}/{len(texts)} 完）")
    assert max(len(text.encode()) for text in texts) <= 2047


def test_parts_are_numbered_from_one_also_when_the_first_text_came_late():
    c = conversation()
    m = c.ask("慢慢说", answer_text(400))
    c.grow(m.msgid, 150)
    c.wait(15)
    assert "还在生成中" in m.texts[0]
    c.end(m.msgid)
    first = as_seen(c.next().texts[0])
    parts = int(re.search(r"（1/(\d+)）发送「继续」看下一段", first).group(1))
    for part in range(2, parts):
        assert f"（{part}/{parts}）" in c.next().texts[0]
    assert c.next().texts[0].endswith(f"（{parts}/{parts} 完）")
    assert c.read_whole(m.msgid)


def test_two_messages_waiting_for_one_answer_do_not_show_it_twice():
    c = conversation()
    m = c.ask("难题", "难题的答案。")
    c.wait(15)  # the link
    first, second = c.next(), c.next()  # 继续, twice, while it is being written
    c.end(m.msgid)
    assert first.texts == [c.text("answer_quote", question="难题") + "难题的答案。"]
    assert second.texts == [c.text("answer_end")]


def test_a_question_asked_while_one_runs_waits_its_turn_and_says_so():
    c = conversation()
    first = c.ask("第一问", "一")
    second = c.ask("第二问", "二")
    assert c.running == [first.msgid], "one model call per subscriber at a time"
    assert c.streams[second.msgid][0] == {"state": "question", "text": "第二问", "queued": True, "sid": SID}
    c.wait(15)
    assert "排在它后面" in second.texts[0]
    c.end(first.msgid)
    assert c.running == [second.msgid]
    assert c.inbox().find(second.msgid).status == Status.RUNNING


def test_the_next_message_shows_an_answer_that_missed_its_window_then_its_own_comes_next():
    c = conversation()
    slow = c.ask("难题", "难题的答案。")
    c.wait(25)  # the link, and then some
    c.end(slow.msgid)
    new = c.ask("新问题", "新答案。")
    assert new.texts[0] == c.text("answer_quote", question="难题") + "难题的答案。" + c.text("note_queued")
    c.end(new.msgid)
    assert c.next().texts[0] == c.text("answer_quote", question="新问题") + "新答案。"


def test_outside_a_session_a_question_gets_the_hint_and_no_model_call():
    c = conversation()
    c.in_session = False
    m = c.ask("你好", "不会用到")
    assert m.texts == [c.text("hint")]
    assert c.starts[m.msgid] == 0


def test_a_new_question_leaves_a_half_read_answer_on_its_page():
    c = conversation()
    long = c.ask("讲长一点", LONG)
    c.end(long.msgid)
    assert "（1/3）" in long.texts[0] and 'href="https://bot.example.com/answer/' in long.texts[0]
    other = c.ask("另一个问题", "另一个答案。")
    c.end(other.msgid)
    assert other.texts == ["另一个答案。"]
    assert c.next().texts[0] == c.text("nothing_more")


def test_stop_cancels_the_questions_not_started_and_forgets_the_rest():
    c = conversation()
    first = c.ask("第一问", "一")
    second = c.ask("第二问", "二")
    c.stop()
    assert c.streams[second.msgid][-1] == {"state": "error", "kind": "cancelled"}
    assert c.streams[first.msgid][-1] == {"state": "started"}, "an answer being written finishes on its page"
    assert c.inbox().questions == []
    c.end(first.msgid)
    assert c.running == [] and c.starts[second.msgid] == 0


def test_too_many_waiting_questions_are_refused():
    c = conversation(MPBOT_MAX_QUEUED=1)
    c.ask("第一问", "一")
    c.ask("第二问", "二")
    third = c.ask("第三问", "三")
    assert third.texts == [c.text("too_many")]
    assert c.streams[third.msgid] == []


def test_a_question_stuck_behind_a_dead_job_starts_on_the_next_message():
    c = conversation()
    dead = c.ask("第一问", "一")
    waiting = c.ask("第二问", "二")
    c.now += c.rules.time_up  # the first job's worker died long ago
    c.next()
    assert c.inbox().find(dead.msgid).status == Status.LOST
    assert c.running == [dead.msgid, waiting.msgid]


def test_a_failed_answer_says_why():
    c = conversation()
    m = c.ask("坏问题", "")
    c.end(m.msgid, failed="timeout")
    assert m.texts == [c.rules.error_text("timeout")]
    assert c.inbox().questions == []


def test_an_answer_read_before_its_job_finished_is_read_again():
    c = conversation()
    m = c.ask("问题", "答案。")
    reply = c.inbox().reply(m.msgid)
    stale = fold(c.streams[m.msgid])  # read by the delivery...
    c.streams[m.msgid].append({"state": "done", "text": "答案。"})  # ...just before the job finished
    c.apply(lambda inbox: inbox.finish(m.msgid, c.now))
    with pytest.raises(machine.StaleAnswer):
        c.apply(lambda inbox: inbox.show(m.msgid, reply, stale, c.now))
    fresh = fold(c.streams[m.msgid])
    assert c.apply(lambda inbox: inbox.show(m.msgid, reply, fresh, c.now, fresh=True)) == "答案。"


def test_a_later_delivery_restarts_a_job_that_was_never_enqueued():
    c = conversation()
    m = c.ask("问题", "答案。")
    assert c.inbox().restart(m.msgid, fold(c.streams[m.msgid][:1])) == Start(m.msgid, SID, "问题")
    assert c.inbox().restart(m.msgid, fold(c.streams[m.msgid])) is None, "it has started"


# --- pushing (verified accounts) ---------------------------------------------------------------


def late(c: Conversation, question: str, answer: str):
    """A question whose answer is finished after its three deliveries."""
    m = c.ask(question, answer)
    c.wait(25)
    c.end(m.msgid)
    return m


def test_push_takes_one_lease_and_pushes_a_late_answer_part_by_part():
    c = conversation(push=True)
    m = late(c, "讲长一点", LONG)
    assert m.texts[0].startswith("回答还在生成中，写好后会直接发到这里")
    assert c.couriers == [f"owner-{m.msgid}"]
    inbox = c.inbox()
    assert inbox.finish("other", c.now, "another-owner") == [], "a live lease is not taken twice"
    while c.couriers:
        c.push_step(c.couriers[0])
    assert [t[-7:] for t in c.pushed] == ["\n\n（1/3）", "\n\n（2/3）", "（3/3 完）"]
    assert c.read_whole(m.msgid)
    assert c.inbox().push.sent == 3 and c.inbox().push.owner is None


def test_the_fifth_pushed_message_says_continue_and_continue_reads_on():
    c = conversation(push=True, MPBOT_PUSH_PER_MESSAGE=2)
    m = late(c, "讲长一点", LONG)
    while c.couriers:
        c.push_step(c.couriers[0])
    assert len(c.pushed) == 2 and "发送「继续」看下一段" in as_seen(c.pushed[1])
    assert c.inbox().find(m.msgid).mode == Mode.READING
    assert c.next().texts[0].endswith("（3/3 完）")


def test_a_lapsed_lease_lets_the_next_message_fetch_the_answer():
    c = conversation(push=True)
    m = late(c, "问题", "答案。")
    owner = c.couriers.pop()  # its process died holding the lease
    assert c.next().texts[0] == c.text("nothing_more"), "the answer is on its way: not shown twice"
    c.now += c.rules.lease
    assert c.next().texts[0] == c.text("answer_quote", question="问题") + "答案。"
    assert c.inbox().finish(m.msgid, c.now, owner) == []


def test_a_refused_push_gives_the_lease_back_and_the_answer_waits_for_the_next_message():
    c = conversation(push=True)
    late(c, "问题", "答案。")
    c.push_fails = "quota_used"
    c.push_step(c.couriers[0])
    assert c.pushed == [] and c.inbox().push.owner is None
    assert c.inbox().push.sent == c.rules.push_per_message, "no more until the subscriber writes"
    c.push_fails = None
    assert c.next().texts[0] == c.text("answer_quote", question="问题") + "答案。"


# --- random conversations ----------------------------------------------------------------------


class Conversations(RuleBasedStateMachine):
    """Any order of what a subscriber, WeChat, the jobs and the pushing process do. Checked on
    every step (inside Conversation): a delivery WeChat sends again gets the same reply; one model
    call per MsgId; no reply over 2047 bytes; parts numbered 1, 2, 3... of a number that never changes;
    the parts of an answer join back into the whole answer. At the end: every finished answer
    was read whole, or was left on its page, or forgotten by /stop."""

    settings: dict = {}

    def __init__(self) -> None:
        super().__init__()
        self.c = conversation(**self.settings)

    def answered(self):
        """Messages WeChat may deliver again although they were answered (the reply got lost)."""
        return [m for m in self.c.messages.values() if m.texts and m.replied < DELIVERIES and self.c.now - m.at < 15]

    @rule(sentences=st.integers(1, 160), width=st.integers(0, 12))
    def ask(self, sentences, width):
        self.c.ask(f"问题{len(self.c.messages)}", answer_text(sentences, width))

    @rule(sentences=st.integers(1, 160), failed=st.sampled_from([None, None, "timeout"]))
    def ask_something_slow(self, sentences, failed):
        """A question whose answer comes after its three deliveries."""
        m = self.c.ask(f"慢问题{len(self.c.messages)}", answer_text(sentences))
        self.c.wait(15)
        if m.msgid in self.c.running:
            self.c.end(m.msgid, failed)

    @rule()
    def read_on(self):
        self.c.next()

    @rule()
    def stop(self):
        self.c.stop()
        self.c.in_session = False

    @rule()
    def start_session(self):
        self.c.in_session = True

    @precondition(lambda self: self.answered())
    @rule(data=st.data())
    def reply_lost(self, data):
        self.c.redeliver(data.draw(st.sampled_from(self.answered())))

    @precondition(lambda self: self.c.running)
    @rule(data=st.data(), chars=st.integers(1, 600))
    def grow(self, data, chars):
        self.c.grow(data.draw(st.sampled_from(self.c.running)), chars)

    @precondition(lambda self: self.c.running)
    @rule(data=st.data(), failed=st.sampled_from([None, None, None, "timeout", "internal"]), woken_first=st.booleans())
    def end(self, data, failed, woken_first):
        self.c.end(data.draw(st.sampled_from(self.c.running)), failed, woken_first)

    @rule(seconds=st.sampled_from([0.5, 2, 5, 10, 30, 61, 400]))
    def wait(self, seconds):
        self.c.wait(seconds)

    @precondition(lambda self: any(m.waiting for m in self.c.messages.values()))
    @rule(data=st.data())
    def deliveries_lost(self, data):
        """The process holding a message's deliveries died, or WeChat gave up on it: it never replies."""
        data.draw(st.sampled_from([m for m in self.c.messages.values() if m.waiting])).waiting = False

    @invariant()
    def one_model_call_per_subscriber_at_a_time(self):
        assert sum(q.status == Status.RUNNING for q in self.c.inbox().questions) <= 1

    @invariant()
    def stored_form_round_trips(self):
        assert self.c.doc is None or dump(load(self.c.doc, self.c.rules)) == self.c.doc

    def teardown(self):
        """Finish every job, let every window and lease pass, then read on with 继续 until the
        bot says nothing is left: every finished answer was read whole, or deliberately left."""
        c = self.c
        c.push_fails = None
        for _ in range(500):
            if c.running:
                c.grow(c.running[0], 10**6)
                c.end(c.running[0])
            elif c.couriers:
                c.push_step(c.couriers[0])
            else:
                break
        c.wait(max(c.rules.window, c.rules.lease) + 1)
        for _ in range(200):
            m = c.next()
            while c.couriers:
                c.push_step(c.couriers[0])
            if m.texts == [c.text("nothing_more")]:
                break
        else:
            pytest.fail("继续 never came to an end")
        for msgid, events in c.streams.items():
            answer = fold(events)
            if answer.question is None or answer.final is None or answer.final.get("kind") == "cancelled":
                continue
            assert c.read_whole(msgid) or msgid in c.left or msgid in c.stopped, (
                f"the answer to {answer.question!r} ({answer.state}) was never read whole"
            )


class PushedConversations(Conversations):
    """The same with push on: late answers pushed, leases that lapse, pushes WeChat refuses (and
    WeChat's 5 messages per subscriber message cut to 2, to reach the limit often)."""

    settings = {"push": True, "MPBOT_PUSH_PER_MESSAGE": 2}

    @precondition(lambda self: self.c.couriers)
    @rule(data=st.data())
    def push_step(self, data):
        self.c.push_step(data.draw(st.sampled_from(self.c.couriers)))

    @precondition(lambda self: self.c.couriers)
    @rule()
    def pushing_process_dies(self):
        self.c.couriers.pop(0)

    @rule(reason=st.sampled_from([None, None, None, "quota_used", "window_expired", "no_permission"]))
    def wechat_refuses_pushes(self, reason):
        self.c.push_fails = reason


MACHINE = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestConversations = Conversations.TestCase
TestConversations.settings = MACHINE
TestPushedConversations = PushedConversations.TestCase
TestPushedConversations.settings = MACHINE


# --- the stored form ---------------------------------------------------------------------------


def golden():
    with open(GOLDEN, encoding="utf-8") as file:
        return json.load(file)["cases"]


@pytest.mark.parametrize("case", sorted(golden()))
def test_a_document_stored_by_the_previous_release_loads_and_round_trips(case):
    stored = golden()[case]["state"]
    rules = make_rules(push="push" in stored)
    inbox = load(json.dumps(stored), rules)
    again = json.loads(dump(inbox))
    assert again.pop("v") == machine.VERSION
    # Field for field what the previous release wrote: its processes can read ours during an upgrade.
    assert again == {"queue": [], "replies": {}, **stored}
    assert load(dump(inbox), rules) == inbox


def resume(case: str, push: bool = False) -> Conversation:
    """The conversation a golden case saved, continued by this release."""
    saved = golden()[case]
    c = Conversation(make_rules(push=push))
    c.doc = json.dumps(saved["state"])
    c.streams.update({msgid: list(events) for msgid, events in saved["answers"].items()})
    c.now = max(q["t"] for q in saved["state"]["queue"]) + 30
    for msgid, events in saved["answers"].items():
        answer = fold(events)
        c.planned[msgid] = answer.text
    for q in c.inbox().questions:  # what the previous release had shown of each, as the model counts it
        text = c.planned[q.id]
        c.seen[q.id] = [Seen(q.id, text[: q.offset] if n == 0 else "", part=n + 1) for n in range(q.part)]
    return c


def test_an_upgrade_in_the_middle_of_reading_part_by_part_loses_nothing():
    c = resume("reading")
    first = golden()["reading"]["state"]["replies"]["101"]["shown"]
    second, third = c.next().texts[0], c.next().texts[0]
    assert "（1/3）" in first and "（2/3）" in second and third.endswith("（3/3 完）")
    whole = golden()["reading"]["answers"]["101"][-1]["text"]
    assert "\n\n".join(part.rsplit("\n\n（", 1)[0] for part in (first, second, third)) == whole


def test_an_upgrade_while_an_answer_is_half_shown_continues_its_numbering():
    c = resume("fallback_partial")
    msgid = "201"
    full = c.planned[msgid] = "".join(f"第{i}句话说完了。" for i in range(1, 21))
    c.streams[msgid].append({"state": "done", "text": full})
    c.carry_out(c.apply(lambda inbox: inbox.finish(msgid, c.now)))
    rest = c.next().texts[0]
    assert rest.endswith("（2/2 完）")
    shown = golden()["fallback_partial"]["state"]["replies"][msgid]["shown"].split("\n……\n")[0]
    assert shown + rest.split("\n\n（")[0] == full


def test_an_upgrade_with_a_question_waiting_starts_it_when_the_first_finishes():
    c = resume("queued")
    c.streams["301"].append({"state": "done", "text": "一"})
    c.carry_out(c.apply(lambda inbox: inbox.finish("301", c.now)))
    assert c.starts == {"302": 1}
    assert c.streams["302"][-1] == {"state": "started"}


def test_an_upgrade_in_the_middle_of_pushing_pushes_the_rest():
    c = resume("push_one_sent", push=True)
    c.couriers.append("0123456789abcdef")
    while c.couriers:
        c.push_step(c.couriers[0])
    assert c.pushed[0].endswith("（2/3）") and c.pushed[1].endswith("（3/3 完）")


def test_a_document_this_release_cannot_read_starts_afresh_rather_than_failing_forever():
    rules = make_rules()
    for broken in ('{"queue": [{"id": 1}]}', '{"v": 99}', "[1, 2]", '{"queue": [{"id": "1", "t": 0, "mode": "x"}]}'):
        with pytest.raises(machine.CorruptInbox):
            load(broken, rules)


# --- the module's own rules --------------------------------------------------------------------


def imports_of(path: str) -> set[str]:
    """Modules a file imports at run time (not under TYPE_CHECKING)."""
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(("mpbot." if node.level else "") + (node.module or ""))
    return names


def test_the_machine_does_no_io_and_reads_no_clock():
    seen, todo = set(), ["mpbot.inbox"]
    while todo:
        module = todo.pop()
        seen.add(module)
        for name in imports_of(os.path.join(ROOT, *module.split(".")) + ".py"):
            if name.startswith("mpbot.") and name not in seen:
                todo.append(name)
            else:
                seen.add(name)
    banned = {"time", "redis", "rq", "werobot", "bottle", "openai", "requests", "socket", "threading", "os"}
    assert "mpbot.formatting" in seen, "the walk follows mpbot's own imports"
    assert not {name.split(".")[0] for name in seen} & banned, sorted(seen)


@pytest.mark.parametrize("name", ["README.md", "README.en.md"])
def test_the_readme_diagram_is_drawn_from_the_transition_tables(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as readme:
        assert machine.diagram() in readme.read()
