"""The retry window: one LLM call per message, the answer on whichever delivery finds it ready."""

import time

import pytest
import requests

from conftest import WECHAT_TIMEOUT
from fakes import Rule, text_xml


def start_session(wechat, openid="user-1"):
    assert "对话已开始" in wechat.say("/chatgpt", openid)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("latency", "answered_on"),
    [(0.2, 1), (1.4, 2), (2.4, 3)],
    ids=["fast answer on delivery 1", "slow answer on delivery 2", "slower answer on delivery 3"],
)
def test_answer_arrives_on_the_first_delivery_that_finds_it_and_the_llm_runs_once(bot, fake_llm, latency, answered_on):
    start_session(bot)
    fake_llm.rules["今天天气如何"] = Rule(latency=latency, content="晴，25 度。")
    log = bot.deliver(text_xml("今天天气如何", bot.new_msgid()))
    assert [d.number for d in log] == list(range(1, answered_on + 1))
    assert all(d.status is None for d in log[:-1]), "earlier deliveries must stay silent until WeChat drops them"
    assert log[-1].status == 200
    assert bot.reply_text(log[-1].body) == "晴，25 度。"
    # The reply goes out the moment the answer exists, not at the end of the wait.
    answered_at = (answered_on - 1) * WECHAT_TIMEOUT + log[-1].seconds
    assert answered_at < latency + 0.3
    assert fake_llm.calls_for("今天天气如何") == 1


@pytest.mark.slow
def test_too_slow_answer_gets_a_link_on_the_last_delivery_in_time(bot, fake_llm):
    start_session(bot)
    fake_llm.rules["写一首长诗"] = Rule(latency=3.5, content="床前明月光")
    log = bot.deliver(text_xml("写一首长诗", bot.new_msgid()))
    assert [d.status for d in log] == [None, None, 200]
    assert log[-1].seconds < WECHAT_TIMEOUT, "the fallback must beat WeChat's timeout"
    text = bot.reply_text(log[-1].body)
    assert "回答还在生成中" in text
    link = text.split('href="')[1].split('"')[0]
    assert link.startswith("https://bot.example.com/answer/")
    # The link serves the answer once it is written.
    page = requests.get(bot.url + link.removeprefix("https://bot.example.com"), timeout=5)
    assert page.status_code == 200 and "床前明月光" not in page.text
    time.sleep(1.2)
    page = requests.get(bot.url + link.removeprefix("https://bot.example.com"), timeout=5)
    assert "床前明月光" in page.text
    assert fake_llm.calls_for("写一首长诗") == 1


@pytest.mark.slow
def test_answer_already_there_when_a_delivery_arrives_is_sent_at_once(bot, fake_llm):
    start_session(bot)
    fake_llm.rules["快问"] = Rule(latency=0.3, content="快答")
    msg = text_xml("快问", bot.new_msgid())
    with pytest.raises(requests.exceptions.ReadTimeout):
        bot.post(msg, timeout=0.1)  # WeChat gave up early on delivery 1
    time.sleep(0.5)
    started = time.monotonic()
    response = bot.post(msg)
    assert time.monotonic() - started < 0.2
    assert bot.reply_text(response.text) == "快答"
    assert fake_llm.calls_for("快问") == 1


def test_deliveries_spread_over_two_web_processes_share_one_llm_call(mode, make_bot, fake_llm):
    if mode == "embedded":
        pytest.skip("embedded mode is one process by design")
    first, second = make_bot(), make_bot()
    start_session(first)
    fake_llm.rules["分布式"] = Rule(latency=1.5, content="一次就好")
    msg = text_xml("分布式", first.new_msgid())
    with pytest.raises(requests.exceptions.ReadTimeout):
        first.post(msg)
    response = second.post(msg)
    assert second.reply_text(response.text) == "一次就好"
    assert fake_llm.calls_for("分布式") == 1


def test_a_job_lost_between_claim_and_enqueue_is_enqueued_by_the_next_delivery(mode, make_bot, fake_llm, caplog):
    if mode == "embedded":
        pytest.skip("embedded mode is one process by design")
    dying, healthy = make_bot(), make_bot()
    start_session(dying)
    # Fault injection: this process claims the message and dies before its job reaches RQ.
    dying.app.mpbot.runner.submit = lambda *args: None
    fake_llm.rules["丢了的任务"] = Rule(latency=0.2, content="还是答上了")
    msg = text_xml("丢了的任务", dying.new_msgid())
    with pytest.raises(requests.exceptions.ReadTimeout):
        dying.post(msg)
    assert fake_llm.calls_for("丢了的任务") == 0
    response = healthy.post(msg)  # WeChat's delivery 2, on another process
    assert healthy.reply_text(response.text) == "还是答上了"
    assert fake_llm.calls_for("丢了的任务") == 1
    assert any("was never enqueued" in record.getMessage() for record in caplog.records)
    # Delivery 3 finds the answer and starts nothing.
    assert healthy.reply_text(healthy.post(msg).text) == "还是答上了"
    assert fake_llm.calls_for("丢了的任务") == 1


def test_three_deliveries_at_once_on_two_processes_start_one_call(mode, make_bot, fake_llm):
    if mode == "embedded":
        pytest.skip("embedded mode is one process by design")
    import concurrent.futures

    bots = [make_bot(), make_bot()]
    start_session(bots[0])
    fake_llm.rules["并发"] = Rule(latency=0.3, content="只算一次")
    msg = text_xml("并发", bots[0].new_msgid())
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda i: bots[i % 2].post(msg), range(3)))
    assert [bots[0].reply_text(r.text) for r in replies] == ["只算一次"] * 3
    assert fake_llm.calls_for("并发") == 1


def test_wechat_error_never_shown_for_a_retried_command(bot, fake_llm):
    msgid = bot.new_msgid()
    first = bot.post(text_xml("/chatgpt", msgid))
    again = bot.post(text_xml("/chatgpt", msgid))
    assert bot.reply_text(first.text) == bot.reply_text(again.text)
    assert "对话已开始" in bot.reply_text(again.text)


@pytest.mark.slow
def test_at_wechat_speed_answers_taking_1_7_12_and_14_seconds_all_arrive_in_the_chat(make_bot, fake_llm):
    """Default timings, WeChat's real 5 s per delivery: the issue's 1 s, 7 s and 12 s, and 14 s."""
    import concurrent.futures

    wechat = make_bot(timeout=5.0, MPBOT_WECHAT_TIMEOUT=5.0, MPBOT_DELIVERY_WAIT=4.5)
    latencies = {1.0: 1, 7.0: 2, 12.0: 3, 14.0: 3}

    def ask(latency):
        openid = f"user-{latency}"
        start_session(wechat, openid)
        question = f"要 {latency} 秒的问题"
        fake_llm.rules[question] = Rule(latency=latency, content=f"{latency} 秒的回答")
        return wechat.deliver(text_xml(question, wechat.new_msgid(), openid)), question

    with concurrent.futures.ThreadPoolExecutor(len(latencies)) as pool:
        results = dict(zip(latencies, pool.map(ask, latencies), strict=True))
    for latency, (log, question) in results.items():
        assert len(log) == latencies[latency], (latency, log)
        assert wechat.reply_text(log[-1].body) == f"{latency} 秒的回答"
        assert fake_llm.calls_for(question) == 1


@pytest.mark.slow
def test_a_slow_first_step_still_lets_a_later_delivery_answer(make_bot, fake_llm):
    """The first delivery spends 2.9 s (a slow moderation API) before it decides what the message
    gets; WeChat has dropped it and delivered again: that delivery waits for the plan instead of
    saying the answer failed. (This WeChat waits 1.6 s for each delivery, the bot's 1 s setting
    plus the way there and back.)"""
    wechat = make_bot(MPBOT_MODERATION_HOOK="moderation_hook:slow", timeout=1.6)
    assert "对话已开始" in wechat.say("/chatgpt")
    log = wechat.deliver(text_xml("慢审核的问题", wechat.new_msgid()))
    assert [d.status for d in log] == [None, 200], log
    assert wechat.reply_text(log[-1].body) == "答：慢审核的问题"
    assert fake_llm.calls_for("慢审核的问题") == 1
