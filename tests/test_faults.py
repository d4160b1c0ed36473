"""Redis unreachable, forged links: answered clearly and fast, never a 5xx."""

import shutil
import subprocess
import time

import pytest
import requests

from conftest import FAST, SHARED
from fakes import Rule, WeChat, free_port, serve, text_xml
from mpbot.web import create_app

# Every test here waits through retries and deadlines, or stops and starts a redis-server.
pytestmark = pytest.mark.slow


@pytest.fixture
def own_redis():
    """A redis-server this test may stop and start."""
    port = free_port()

    def start():
        return subprocess.Popen(
            [
                shutil.which("redis-server"),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )

    holder = {"process": start()}
    time.sleep(0.3)
    holder["url"] = f"redis://127.0.0.1:{port}/0"
    holder["start"] = lambda: holder.update(process=start()) or time.sleep(0.3)
    yield holder
    holder["process"].terminate()
    holder["process"].wait(5)


def test_redis_down_gives_an_apology_and_a_503_health_then_recovers(own_redis, fake_llm, fake_llm_server, caplog):
    app = create_app({**SHARED, **FAST, "REDIS_URL": own_redis["url"], "OPENAI_BASE_URL": fake_llm_server[1]})
    url, server = serve(app)
    wechat = WeChat(url, SHARED["WECHAT_TOKEN"], timeout=1.0)
    try:
        assert "对话已开始" in wechat.say("/chatgpt")
        own_redis["process"].terminate()
        own_redis["process"].wait(5)

        started = time.monotonic()
        response = wechat.post(text_xml("还在吗", wechat.new_msgid()))
        assert response.status_code == 200
        assert "稍后再试" in wechat.reply_text(response.text)
        assert time.monotonic() - started < 1.0
        assert any("store unreachable" in r.message for r in caplog.records)

        health = requests.get(f"{url}/healthz", timeout=5)
        assert health.status_code == 503 and "Redis" in health.text

        own_redis["start"]()
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        # A Redis without persistence lost the session: the subscriber starts again, normally.
        assert "/chatgpt" in wechat.say("还在吗")
    finally:
        server.shutdown()
        server.server_close()
        app.mpbot.close()


def test_a_redis_that_hangs_gets_an_apology_in_time_and_a_503_health_at_once_then_recovers(
    own_redis, fake_llm, fake_llm_server
):
    """Redis stopped (SIGSTOP: it neither answers nor refuses) for 12 s, with WeChat's own timings:
    every delivery answers within 4.5 s with a text saying to try again, /healthz says 503 within
    a second, and service is normal as soon as Redis returns."""
    import signal
    import threading

    settings = {**SHARED, "REDIS_URL": own_redis["url"], "OPENAI_BASE_URL": fake_llm_server[1]}
    app = create_app(settings)
    url, server = serve(app)
    wechat = WeChat(url, SHARED["WECHAT_TOKEN"], timeout=5.0)
    process = own_redis["process"]
    try:
        assert "对话已开始" in wechat.say("/chatgpt")
        waiting = {}

        def ask():  # a delivery already waiting for its answer when Redis stops
            started = time.monotonic()
            response = wechat.post(text_xml("等回答", wechat.new_msgid()))
            waiting.update(status=response.status_code, text=wechat.reply_text(response.text), at=time.monotonic())
            waiting["seconds"] = waiting["at"] - started

        thread = threading.Thread(target=ask)
        thread.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            started = time.monotonic()
            health = requests.get(f"{url}/healthz", timeout=5)
            assert health.status_code == 503 and time.monotonic() - started < 1.0
            for text in ("/help", "新问题"):
                started = time.monotonic()
                response = wechat.post(text_xml(text, wechat.new_msgid()))
                took = time.monotonic() - started
                assert response.status_code == 200 and "稍后再试" in wechat.reply_text(response.text), text
                assert took < 4.5, f"{text}: {took:.1f} s"
            thread.join(10)
            assert waiting["status"] == 200 and "稍后再试" in waiting["text"], waiting
            assert waiting["at"] - stopped < 4.5, f"the waiting delivery answered {waiting['at'] - stopped:.1f} s after"
            time.sleep(max(0.0, 12 - (time.monotonic() - stopped)))
        finally:
            process.send_signal(signal.SIGCONT)
        started = time.monotonic()
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        assert "可用命令" in wechat.say("/help") and time.monotonic() - started < 3, "normal at once"
    finally:
        server.shutdown()
        server.server_close()
        app.mpbot.close()


# --- the model endpoint fails or hangs ---------------------------------------------------------


def in_session(wechat):
    assert "对话已开始" in wechat.say("/chatgpt")


def test_a_server_error_is_retried_and_the_answer_still_arrives_once(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["不稳定"] = Rule(status=503, failures=1)
    assert bot.say("不稳定") == "答：不稳定"
    assert fake_llm.calls_for("不稳定") == 2


def test_retries_back_off_and_a_late_answer_still_reaches_the_chat(make_bot, fake_llm, mode):
    if mode == "redis":
        pytest.skip("the workers' retries are set at their start; embedded covers the backoff")
    wechat = make_bot(MPBOT_LLM_RETRIES=3)
    in_session(wechat)
    fake_llm.rules["很不稳定"] = Rule(status=503, failures=3)
    assert "回答还在生成中" in wechat.say("很不稳定")  # 0.5 + 1 + 2 s of backoff: past the window
    time.sleep(1.5)
    assert wechat.say("继续") == "关于「很不稳定」：\n\n答：很不稳定"
    starts = [entry[1] for entry in fake_llm.timeline if entry[0] == "很不稳定"]
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert len(starts) == 4
    assert gaps[0] >= 0.37 and gaps[1] >= 0.75 and gaps[2] >= 1.5, gaps


def test_a_rate_limit_is_retried_after_the_time_the_endpoint_asks_for(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["限流"] = Rule(status=429, failures=1, retry_after=1)
    started = time.monotonic()
    assert bot.say("限流") == "答：限流"
    assert fake_llm.calls_for("限流") == 2
    (first, _), (second, _) = [(entry[1], entry[2]) for entry in fake_llm.timeline if entry[0] == "限流"]
    assert second - first >= 1.0
    assert time.monotonic() - started < 2.8


def test_a_stream_broken_off_is_asked_again_and_the_page_holds_one_whole_answer(bot, fake_llm):
    in_session(bot)
    answer = "第一句。第二句。第三句。第四句。"
    fake_llm.rules["断流"] = Rule(content=answer, pieces=4, piece_delay=0.1, break_after=2, failures=1)
    msgid = bot.new_msgid()
    log = bot.deliver(text_xml("断流", msgid))
    assert bot.reply_text(log[-1].body) == answer
    page = requests.get(f"{bot.url}/answer/{bot.app.mpbot.links.token(str(msgid))}", timeout=5)
    assert page.text.count("第一句。") == 1


def test_an_endpoint_that_keeps_failing_gets_a_clear_sentence_within_the_deadline(make_bot, fake_llm, mode):
    if mode == "redis":
        pytest.skip("the workers' deadline is set at their start; embedded covers it")
    wechat = make_bot(MPBOT_LLM_TIMEOUT=2.0)
    in_session(wechat)
    fake_llm.rules["一直坏"] = Rule(status=500)
    started = time.monotonic()
    assert "回答出错" in wechat.say("一直坏")
    assert time.monotonic() - started < 2.6
    assert 2 <= fake_llm.calls_for("一直坏") <= 4


@pytest.mark.parametrize(
    "rule",
    [Rule(latency=30), Rule(content="开头。后面永远不来。", pieces=2, piece_delay=30)],
    ids=["no first byte", "stream stalls after the first piece"],
)
def test_a_hung_call_is_cut_at_the_deadline(make_bot, fake_llm, mode, rule):
    if mode == "redis":
        pytest.skip("the workers' deadline is set at their start; embedded covers it")
    wechat = make_bot(MPBOT_LLM_TIMEOUT=1.5)
    in_session(wechat)
    fake_llm.rules["卡住"] = rule
    started = time.monotonic()
    assert "超时" in wechat.say("卡住")
    assert time.monotonic() - started < 2.5, "the reply comes at the deadline, not at a read timeout"


@pytest.mark.parametrize(
    "rule",
    [Rule(latency=30, stall_calls=1), Rule(stall=30, stall_calls=1)],
    ids=["no response", "a stream with no token"],
)
def test_a_model_that_accepts_and_stays_silent_is_asked_again_after_the_first_token_deadline(
    make_bot, fake_llm, mode, rule
):
    if mode == "redis":
        pytest.skip("the workers' deadline is set at their start; embedded covers it")
    wechat = make_bot(MPBOT_FIRST_TOKEN_TIMEOUT=1.0, MPBOT_LLM_TIMEOUT=20.0)
    in_session(wechat)
    fake_llm.rules["沉默"] = rule
    log = wechat.deliver(text_xml("沉默", wechat.new_msgid()))
    (first, _), (second, _) = fake_llm.span("沉默"), [e[1:3] for e in fake_llm.timeline if e[0] == "沉默"][1]
    assert fake_llm.calls_for("沉默") == 2 and second - first < 2.0, f"asked again after {second - first:.1f} s"
    assert wechat.reply_text(log[-1].body) == "答：沉默", "the new attempt answers within WeChat's window"


def test_a_model_slow_to_begin_is_given_more_patience_each_attempt(make_bot, fake_llm, mode):
    """A model that takes 2.5 s to begin, with a 1 s first-token setting: the attempts wait 1 s,
    2 s, then 4 s, and the third answers (the answer is not lost to a fixed limit)."""
    if mode == "redis":
        pytest.skip("the workers' settings are set at their start; embedded covers it")
    wechat = make_bot(MPBOT_FIRST_TOKEN_TIMEOUT=1.0, MPBOT_LLM_RETRIES=3)
    in_session(wechat)
    fake_llm.rules["慢启动"] = Rule(latency=2.5)
    wechat.deliver(text_xml("慢启动", wechat.new_msgid()))
    deadline = time.monotonic() + 15
    while fake_llm.calls_for("慢启动") < 3 or fake_llm.timeline[-1][2] is None:
        assert time.monotonic() < deadline, "no third attempt"
        time.sleep(0.1)
    time.sleep(0.3)
    assert wechat.say("继续") == "关于「慢启动」：\n\n答：慢启动"
    assert fake_llm.calls_for("慢启动") == 3
