"""Verified accounts: a late answer is pushed into the chat as customer-service messages; any
failure to push leaves it to the page link and the subscriber's next message, as without push.

The pushes go to a fake WeChat API on 127.0.0.1 (``fakes.FakeWeChatAPI``). In Redis mode they are
sent by RQ workers of their own (a queue of their own), started with push on.
"""

import logging
import os
import subprocess
import sys
import threading
import time

import pytest
import redis
from test_admin import metrics, mpbot

from conftest import FAST, ROOT, SHARED, SHARED_PREFIX, TOKEN, run_workers
from fakes import FakeWeChatAPI, Rule, body_of, link_in
from mpbot.keys import Keys
from mpbot.simulator import as_seen

# Every test here waits for late answers (3.2 s) or starts processes.
pytestmark = pytest.mark.slow

APPID = "wx0123456789abcdef"
APPSECRET = "fake-appsecret-0f1e2d3c4b5a69788796a5b4"
QUEUE = "mpbot-push"
LATE = 3.2  # seconds the model takes: past the three deliveries (about 2.8 s at the tests' speed)
AFTER_REPLY = 1.0  # reader.AFTER_REPLY: the first push waits this long after the reply that announced it
CONTINUE = "继续"
NOTHING_MORE = "没有需要继续看的回答了，请直接发送问题。"
COMING = "回答还在生成中，写好后会直接发到这里。"
OLD_FALLBACK = "回答还在生成中，<a href="
PARAGRAPHS = [f"第{i}段。" + "这一段讲一个要点，" * 10 + "讲完了。" for i in range(1, 36)]
LONG = "\n\n".join(PARAGRAPHS[:15])  # three parts
LONGER = "\n\n".join(PARAGRAPHS)  # six parts


def in_session(wechat, openid="user-1"):
    assert "对话已开始" in wechat.say("/chatgpt", openid)


@pytest.fixture(scope="session")
def wechat_api_server():
    fake = FakeWeChatAPI(APPID, APPSECRET)
    return fake, fake.start()


@pytest.fixture
def wechat_api(wechat_api_server):
    fake, _url = wechat_api_server
    fake.reset()
    yield fake
    fake.reset()


def push_settings(url: str) -> dict:
    return {"MPBOT_PUSH": True, "WECHAT_APPSECRET": APPSECRET, "WECHAT_API_BASE": url, "MPBOT_QUEUE": QUEUE}


@pytest.fixture(scope="session")
def push_workers(worker_env, wechat_api_server, tmp_path_factory):
    """RQ workers with push on, as the Procfile starts them; they log at DEBUG, to a file."""
    path = tmp_path_factory.mktemp("rq-push") / "workers.log"
    settings = {**FAST, **push_settings(wechat_api_server[1]), "WECHAT_APPID": APPID, "MPBOT_LOG_LEVEL": "DEBUG"}
    with run_workers({**worker_env, **{k: str(v) for k, v in settings.items()}}, 2, path, QUEUE):
        yield path


class Logs:
    """What the process that pushes has logged since the test began (the test process in
    embedded mode, the push workers' log file in Redis mode)."""

    def __init__(self, caplog, path):
        self.caplog = caplog
        self.path = path
        self.start = path.stat().st_size if path else 0

    def text(self) -> str:
        if self.path is None:
            return "\n".join(record.getMessage() for record in self.caplog.records)
        with open(self.path, encoding="utf-8", errors="replace") as log:
            log.seek(self.start)
            return log.read()


@pytest.fixture
def push_bot(request, mode, make_bot, wechat_api_server, wechat_api, caplog):
    """``push_bot(**overrides)``: a bot with push on; ``push_bot.logs`` reads what was logged."""
    caplog.set_level(logging.INFO)
    path = request.getfixturevalue("push_workers") if mode == "redis" else None

    def make(**overrides):
        return make_bot(appid=APPID, **push_settings(wechat_api_server[1]), **overrides)

    make.logs = Logs(caplog, path)
    return make


def test_a_late_answer_arrives_in_the_chat_in_parts(push_bot, fake_llm, wechat_api, mode):
    bot = push_bot()
    in_session(bot)
    fake_llm.rules["讲长一点"] = Rule(latency=LATE, content=LONG)
    reply = bot.say("讲长一点")
    replied = time.time()
    assert reply.startswith(COMING), reply
    assert link_in(reply).startswith("https://bot.example.com/answer/"), "the page stays a way to read it"
    texts = wechat_api.wait_texts("user-1", 3)
    assert len(texts) == 3, texts
    assert texts[0].endswith("\n\n（1/3）") and texts[1].endswith("\n\n（2/3）") and texts[2].endswith("（3/3 完）")
    assert "\n\n".join(body_of(text) for text in texts) == LONG, "nothing lost, repeated, or escaped"
    assert all(len(text.encode()) <= 2047 for text in texts)
    assert wechat_api.messages[0][2] > replied, "the reply that announced it comes first"
    # Nothing is left to fetch: the next message does not show the answer again.
    assert bot.say(CONTINUE) == NOTHING_MORE
    assert fake_llm.calls_for("讲长一点") == 1
    assert wechat_api.fetches == 1
    sent = ("mpbot_pushes_total", (("outcome", "sent"),))
    deadline = time.monotonic() + 2  # counted once WeChat has answered the last push
    while (figures := metrics(bot.url)).get(sent) != 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert figures[sent] == 3
    assert figures[("mpbot_wechat_token_fetches_total", ())] == 1
    logged = push_bot.logs.text()
    assert APPSECRET not in logged and "fake-access-token" not in logged, "no secret in the logs"
    if mode == "redis":
        assert "access_token fetched" in logged, "the push workers' log is the one read here"


def test_late_answers_to_two_questions_arrive_in_the_order_asked(push_bot, fake_llm, wechat_api):
    bot = push_bot()
    in_session(bot)
    fake_llm.rules["第一问"] = Rule(latency=LATE, content="一")
    fake_llm.rules["第二问"] = Rule(latency=0.2, content="二")
    replies = {}

    def ask(question, delay):
        time.sleep(delay)
        replies[question] = bot.say(question)

    threads = [threading.Thread(target=ask, args=(q, d)) for q, d in (("第一问", 0), ("第二问", 0.3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies["第一问"].startswith(COMING)
    assert replies["第二问"].startswith("上一个问题还在回答中，这个问题排在它后面，回答好后会直接发到这里。")
    assert wechat_api.wait_texts("user-1", 2) == ["关于「第一问」：\n\n一", "关于「第二问」：\n\n二"]
    assert bot.say(CONTINUE) == NOTHING_MORE


def test_an_answer_in_the_window_is_still_the_reply(push_bot, fake_llm, wechat_api):
    bot = push_bot()
    in_session(bot)
    assert bot.say("快问题") == "答：快问题"
    fake_llm.rules["慢一点"] = Rule(latency=1.5)  # answered on the second delivery
    assert bot.say("慢一点") == "答：慢一点"
    time.sleep(AFTER_REPLY + 0.5)
    assert (wechat_api.fetches, wechat_api.sends) == (0, 0), "nothing pushed, not even a token fetched"


def test_a_pushed_answer_carries_no_character_xml_cannot_and_no_link_the_model_wrote(push_bot, fake_llm, wechat_api):
    bot = push_bot()
    in_session(bot)
    evil = '晚到的回答\x00\x1b\ufffe\udfff。<a href="http://evil.example">点此领奖</a>'
    fake_llm.rules["慢一点"] = Rule(latency=LATE, content=evil)
    assert bot.say("慢一点").startswith(COMING)
    (text,) = wechat_api.wait_texts("user-1", 1)
    assert text.startswith("关于「慢一点」：\n\n晚到的回答。点此领奖 (http://evil.example)"), text
    assert "<a" not in text and not set("\x00\x1b\ufffe\udfff") & set(text)
    assert fake_llm.calls_for("慢一点") == 1


def test_without_push_nothing_calls_wechat_and_late_answers_wait_as_before(make_bot, fake_llm, wechat_api_server):
    fake, url = wechat_api_server
    fake.reset()
    # An AppSecret alone (an unverified account can have one) does not turn pushing on.
    bot = make_bot(appid=APPID, WECHAT_APPSECRET=APPSECRET, WECHAT_API_BASE=url)
    in_session(bot)
    fake_llm.rules["慢问题"] = Rule(latency=LATE)
    assert bot.say("慢问题").startswith(OLD_FALLBACK)
    time.sleep(LATE - 2.8 + 0.5)
    assert bot.say(CONTINUE) == "关于「慢问题」：\n\n答：慢问题"
    assert (fake.fetches, fake.sends) == (0, 0)


def _refuse(wechat_api, failure):
    if failure == "down":
        wechat_api.down = True
    elif failure == 40164:
        wechat_api.token_error = failure  # the token request is refused: this server's IP is not whitelisted
    else:
        wechat_api.refuse["*"] = failure


@pytest.mark.parametrize(
    ("failure", "reason", "whole_account"),
    [
        (48001, "no_permission", True),
        (45015, "window_expired", False),
        (45047, "quota_used", False),
        (40164, "ip_not_whitelisted", True),
        ("down", "unreachable", True),
    ],
)
def test_a_push_that_fails_leaves_the_answer_to_the_next_message(
    push_bot, fake_llm, wechat_api, failure, reason, whole_account, mode, worker_env
):
    bot = push_bot()
    in_session(bot)
    _refuse(wechat_api, failure)
    for question in ("第一个慢问题", "第二个慢问题"):
        fake_llm.rules[question] = Rule(latency=LATE)
    asked = time.monotonic()
    assert bot.say("第一个慢问题").startswith(COMING)
    time.sleep(max(0.0, asked + LATE + AFTER_REPLY + 0.6 - time.monotonic()))  # the push was tried
    assert wechat_api.texts("user-1") == []
    assert bot.say(CONTINUE) == "关于「第一个慢问题」：\n\n答：第一个慢问题", "the next message fetches it"
    asked = time.monotonic()
    second = bot.say("第二个慢问题")
    if whole_account:
        assert second.startswith(OLD_FALLBACK), "pushing is paused: the reply says what it says without push"
    else:
        assert second.startswith(COMING), "a failure for one subscriber does not pause the account"
    time.sleep(max(0.0, asked + LATE + AFTER_REPLY + 0.6 - time.monotonic()))
    assert bot.say(CONTINUE) == "关于「第二个慢问题」：\n\n答：第二个慢问题"
    assert wechat_api.texts("user-1") == []
    assert push_bot.logs.text().count(f"push failed ({reason})") == 1, "logged once, not per message"
    # Counted every time: paused, the account's second answer was not even tried.
    env = {**worker_env, **({"REDIS_URL": ""} if mode == "embedded" else {})}
    args = ("--url", f"{bot.url}/metrics") if mode == "embedded" else ()
    table = mpbot("stats", *args, env=env)
    rows = dict(line.split("  ", 1) for line in table.stdout.splitlines() if not line.startswith(" "))
    assert rows["pushed messages"].strip() == f"0 sent, not sent: {reason} {1 if whole_account else 2}"


@pytest.mark.parametrize("how", ["expired", "revoked"])
def test_a_token_that_stops_working_is_replaced_once_and_the_push_goes_through(push_bot, fake_llm, wechat_api, how):
    bot = push_bot()
    in_session(bot)
    for question in ("慢问题一", "慢问题二"):
        fake_llm.rules[question] = Rule(latency=LATE)
    assert bot.say("慢问题一").startswith(COMING)
    assert wechat_api.wait_texts("user-1", 1) == ["关于「慢问题一」：\n\n答：慢问题一"]
    assert wechat_api.fetches == 1
    if how == "expired":
        wechat_api.expire_tokens()  # 42001
    else:
        wechat_api.revoke_tokens()  # 40001, as after a forced refresh elsewhere
    assert bot.say("慢问题二").startswith(COMING)
    assert wechat_api.wait_texts("user-1", 2) == [
        "关于「慢问题一」：\n\n答：慢问题一",
        "关于「慢问题二」：\n\n答：慢问题二",
    ]
    assert wechat_api.fetches == 2, "one new token"
    assert wechat_api.sends == 3, "the refused message was sent once more, not more"


def test_five_messages_per_subscriber_message_then_continue_reads_on(push_bot, fake_llm, wechat_api):
    bot = push_bot()
    in_session(bot)
    fake_llm.rules["讲很长"] = Rule(latency=LATE, content=LONGER)
    assert bot.say("讲很长").startswith(COMING)
    texts = wechat_api.wait_texts("user-1", 5)
    time.sleep(0.5)
    assert len(wechat_api.texts("user-1")) == 5, "WeChat allows five after a message"
    assert [text.rsplit("\n\n（", 1)[1][:3] for text in texts] == ["1/6", "2/6", "3/6", "4/6", "5/6"]
    assert "（5/6）发送「继续」看下一段" in as_seen(texts[4]), "the last one says how to read on"
    sixth = bot.say(CONTINUE)
    assert sixth.endswith("（6/6 完）")
    assert "\n\n".join(body_of(text) for text in [*texts, sixth]) == LONGER


def test_a_late_failure_is_pushed_too(push_bot, fake_llm, wechat_api):
    bot = push_bot()
    in_session(bot)
    fake_llm.rules["会失败"] = Rule(latency=LATE, status=400)
    assert bot.say("会失败").startswith(COMING)
    texts = wechat_api.wait_texts("user-1", 1)
    assert len(texts) == 1 and texts[0].startswith("关于「会失败」：\n\n抱歉"), texts
    assert bot.say(CONTINUE) == NOTHING_MORE


def test_two_processes_share_one_token(redis_url, wechat_api_server, wechat_api):
    """Two processes (as two hosts would) push at the same moment: WeChat is asked for one token."""
    wechat_api.token_latency = 0.5  # both ask while the first fetch is on its way
    script = (
        "import sys, time\n"
        "from mpbot.config import load_config\n"
        "from mpbot.services import Services\n"
        "api = Services(load_config()).pusher.api\n"
        "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n"
        "for n in range(3):\n"
        "    api.send_text(sys.argv[2], f'{sys.argv[2]} 的第 {n} 条')\n"
    )
    settings = {**SHARED, **push_settings(wechat_api_server[1]), "WECHAT_APPID": APPID, "REDIS_URL": redis_url}
    env = {**os.environ, **{k: str(v) for k, v in settings.items()}, "PYTHONPATH": ROOT}
    start = time.time() + 2.0  # both have started by then
    try:
        processes = [
            subprocess.Popen([sys.executable, "-c", script, str(start), name], env=env, cwd=ROOT)
            for name in ("host-a", "host-b")
        ]
        assert [process.wait(30) for process in processes] == [0, 0]
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(Keys(SHARED_PREFIX).pattern()):
            client.delete(key)
    assert wechat_api.fetches == 1
    assert wechat_api.texts("host-a") == [f"host-a 的第 {n} 条" for n in range(3)]
    assert wechat_api.texts("host-b") == [f"host-b 的第 {n} 条" for n in range(3)]


def test_check_gets_the_token_or_says_what_to_fix(wechat_api_server, wechat_api):
    env = {
        "WECHAT_TOKEN": TOKEN,
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "PUBLIC_URL": "http://127.0.0.1:9",
        **{name: str(value) for name, value in push_settings(wechat_api_server[1]).items()},
        "WECHAT_APPID": APPID,
    }
    lines = {line[5:].split()[0]: line for line in mpbot("check", env=env).stdout.splitlines()}
    assert lines["push"].startswith("OK") and "access_token OK" in lines["push"], lines
    wechat_api.token_error = 40164
    output = mpbot("check", env=env).stdout
    lines = {line[5:].split()[0]: line for line in output.splitlines()}
    assert lines["push"].startswith("FAIL") and "IP whitelist" in lines["push"], lines
    assert APPSECRET not in output
    assert "OK   push" not in mpbot("check", env={**env, "MPBOT_PUSH": "0"}).stdout
