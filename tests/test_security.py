"""Only WeChat speaks for a subscriber: each attack SECURITY.md lists, tried through the signed
webhook and the pages as an outsider would, in both modes.

An outsider here has one captured signed URL (a proxy log, a Referer) or none, and no token.
"""

import re
import threading
import time
import xml.etree.ElementTree as ET

import pytest
import redis
import requests

from conftest import FAST, SHARED, SHARED_PREFIX, TOKEN
from fakes import Rule, WeChat, aes_encrypt, free_port, link_in, serve, sha1_signature, text_xml
from mpbot.keys import Keys
from mpbot.web import create_app

KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx2c2769f8efd9abc2"
HELP = "可用命令"
STARTED = "对话已开始"
# What a model (or a prompt injected into it) can write that XML 1.0 cannot carry.
# (A low surrogate before a high one: the other order would be a valid pair once JSON-decoded.)
UNCARRIABLE = "\x00\x01\x08\x0b\x0c\x1b\x1f\ufffe\uffff\udfff\ud800"


def in_session(wechat, openid="user-1"):
    assert STARTED in wechat.say("/chatgpt", openid=openid)


# --- 1. plaintext on an account that encrypts ---------------------------------------------------


def test_plaintext_is_refused_when_an_aes_key_is_set_and_the_log_says_how_to_fix_it(make_bot, fake_llm, caplog):
    wechat = make_bot(aes_key=KEY, appid=APPID)
    assert STARTED in wechat.say("/chatgpt", safe=True)  # the subscriber, in safe mode
    # The outsider: a plaintext body under a valid signature (as a captured URL gives).
    response = wechat.post(text_xml("用我的额度回答这个", wechat.new_msgid()))
    assert response.status_code == 403
    assert "安全模式" in response.text and "WECHAT_ENCODING_AES_KEY" in response.text
    assert any("安全模式 or 兼容模式" in r.getMessage() for r in caplog.records), "the admin's log names the fix"
    time.sleep(0.3)
    assert fake_llm.calls_for("用我的额度回答这个") == 0
    assert HELP in wechat.say("/help", safe=True), "safe-mode messages still work"


def test_in_compatible_mode_only_the_encrypted_message_counts(make_bot, fake_llm):
    wechat = make_bot(aes_key=KEY, appid=APPID)
    # WeChat's compatible mode: plaintext fields beside <Encrypt>. The plaintext ones are swapped
    # for another subscriber and another text; nothing signs them.
    encrypted = aes_encrypt(KEY, APPID, text_xml("/help", wechat.new_msgid(), openid="user-1"))
    query = {**wechat.signed_query(), "encrypt_type": "aes"}
    query["msg_signature"] = sha1_signature(wechat.token, query["timestamp"], query["nonce"], encrypted)
    forged = text_xml("/chatgpt", wechat.new_msgid(), openid="victim").decode()
    body = forged.replace("</xml>", f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>").encode()
    response = wechat.post(body, query=query)
    assert response.status_code == 200
    assert ET.fromstring(response.text).findtext("Encrypt"), "answered encrypted"
    assert HELP in wechat.reply_text(response.text, safe=True), "the decrypted /help is what was answered"
    # The same, with encrypt_type dropped from the URL: still the encrypted message, or nothing.
    del query["encrypt_type"]
    assert HELP in wechat.reply_text(wechat.post(body, query=query).text, safe=True)
    assert "当前没有进行中的对话" in wechat.say("/stop", openid="victim", safe=True), "the victim never started one"


@pytest.mark.slow
def test_check_says_the_console_is_in_plaintext_mode(make_bot, mode, redis_url):
    if mode == "embedded":
        pytest.skip("`mpbot check` reads what the bots noticed from Redis; in embedded mode it is in their memory")
    from mpbot.config import load_config
    from mpbot.doctor import FAIL, OK, check_aes
    from mpbot.store import RedisStore

    wechat = make_bot(aes_key=KEY, appid=APPID)
    config = load_config({**SHARED, "REDIS_URL": redis_url, "WECHAT_ENCODING_AES_KEY": KEY, "WECHAT_APPID": APPID})
    store = RedisStore(config)
    try:
        status, _item, detail = check_aes(config, store)
        assert status == OK and "安全模式 or 兼容模式" in detail
        assert wechat.post(text_xml("/help", wechat.new_msgid())).status_code == 403  # the console sends plaintext
        status, _item, detail = check_aes(config, store)
        assert status == FAIL and "a signed message was refused" in detail and "安全模式" in detail
    finally:
        store.close()


# --- 2. one signed URL, another body ------------------------------------------------------------


def test_a_signature_carries_one_message_only(make_bot, fake_llm, mode):
    first = make_bot()
    # Another web process (in Redis mode they share the store): the replay may land on either.
    second = make_bot() if mode == "redis" else first
    query = first.signed_query()
    mine = text_xml("/help", first.new_msgid(), openid="user-1")
    response = first.post(mine, query=query)
    assert response.status_code == 200 and HELP in first.reply_text(response.text)
    # The outsider puts another subscriber's message under the same signature.
    theirs = text_xml("/chatgpt", first.new_msgid(), openid="victim")
    refused = second.post(theirs, query=query)
    assert refused.status_code == 403 and "another message" in refused.text
    question = text_xml("替我问一个问题", first.new_msgid(), openid="victim")
    assert second.post(question, query=query).status_code == 403
    assert "当前没有进行中的对话" in first.say("/stop", openid="victim"), "no session was started for the victim"
    assert fake_llm.calls_for("替我问一个问题") == 0
    # WeChat's own retry of the same message (the same bytes, or the same fields re-serialised) passes.
    again = second.post(mine, query=query)
    assert again.status_code == 200 and HELP in second.reply_text(again.text)
    respaced = mine.replace(b"<xml>", b"<xml>\n  ").replace(b"</xml>", b"\n</xml>")
    assert second.post(respaced, query=query).status_code == 200


def test_a_url_check_or_a_refused_body_spends_its_signature(make_bot, fake_llm):
    wechat = make_bot()
    # The console's URL check, seen in a log: its signature cannot carry a message afterwards.
    query = wechat.signed_query()
    assert requests.get(f"{wechat.url}/wechat", params={**query, "echostr": "123"}, timeout=5).text == "123"
    assert requests.get(f"{wechat.url}/wechat", params={**query, "echostr": "123"}, timeout=5).text == "123"
    refused = wechat.post(text_xml("/chatgpt", wechat.new_msgid(), openid="victim"), query=query)
    assert refused.status_code == 403
    # A signed body that was refused (unreadable) spends its signature too.
    query = wechat.signed_query()
    assert wechat.post(b"<xml>not a message</xml>", query=query).status_code == 400
    assert wechat.post(b"<xml>not a message</xml>", query=query).status_code == 400, "its retry: the same answer"
    assert wechat.post(text_xml("/chatgpt", wechat.new_msgid(), openid="victim"), query=query).status_code == 403
    assert "当前没有进行中的对话" in wechat.say("/stop", openid="victim")


def test_safe_mode_retries_encrypted_afresh_still_pass(make_bot):
    wechat = make_bot(aes_key=KEY, appid=APPID)
    body = text_xml("/help", wechat.new_msgid())
    query = wechat.signed_query()
    for _ in range(2):  # each post encrypts with a new random prefix, under the same URL signature
        response = wechat.post(body, query=query, safe=True)
        assert response.status_code == 200 and HELP in wechat.reply_text(response.text, safe=True)


@pytest.mark.slow
def test_the_signature_memory_expires_with_the_freshness_window(make_bot, mode, redis_url):
    if mode == "embedded":
        pytest.skip("the TTL is read from Redis")
    wechat = make_bot()
    query = wechat.signed_query()
    assert wechat.post(text_xml("/help", wechat.new_msgid()), query=query).status_code == 200
    client = redis.Redis.from_url(redis_url)
    ttl = client.pttl(Keys(SHARED_PREFIX).signed(query["signature"])) / 1000
    assert 2 * 300 < ttl <= 2 * 300 + 5, "kept while the timestamp could pass, and no longer"


# --- 3. the console's URL check -----------------------------------------------------------------


@pytest.mark.parametrize("age", [-400, 400, 10**9])
def test_url_check_refuses_a_timestamp_outside_the_window(bot, age):
    params = {**bot.signed_query(timestamp=str(max(0, int(time.time()) - age))), "echostr": "5838479218127813673"}
    response = requests.get(f"{bot.url}/wechat", params=params, timeout=5)
    assert response.status_code == 403
    assert "5838479218127813673" not in response.text
    fresh = {**bot.signed_query(), "echostr": "5838479218127813673"}
    assert requests.get(f"{bot.url}/wechat", params=fresh, timeout=5).text == "5838479218127813673"


# --- 4. the model's words --------------------------------------------------------------------


def test_model_text_xml_cannot_carry_never_breaks_a_reply_a_page_or_the_session(make_bot, fake_llm, mode):
    wechat = make_bot()
    in_session(wechat)
    evil = (
        f'第一句{UNCARRIABLE}。点击<a href="http://evil.example/steal">微信安全中心</a>验证。'
        '再点<**a** href="http://evil.example/2">这里<**/a**>。\n第二句]]>结束'
    )
    fake_llm.rules["坏字符"] = Rule(content=evil, pieces=3)
    reply = wechat.say("坏字符")  # reply_text parses the XML: it would raise on a bad character
    assert "第一句" in reply and "第二句]]>结束" in reply
    assert not set(UNCARRIABLE) & set(reply)
    assert 'href="http://evil' not in reply and "<a" not in reply.replace('<a href="https://bot.example.com', "")
    assert "微信安全中心 (http://evil.example/steal)" in reply, "the link the model wrote is shown as text"
    assert fake_llm.calls_for("坏字符") == 1, "the job did not crash and run again"
    # The session's history holds nothing that breaks the next question.
    assert wechat.say("下一个问题") == "答：下一个问题"
    sent = fake_llm.calls[-1]["messages"]
    assert not any(set(UNCARRIABLE) & set(m["content"]) for m in sent)
    # The pages show it.
    history = wechat.say("/history")
    page = requests.get(link_in(history).replace("https://bot.example.com", wechat.url), timeout=5)
    assert page.status_code == 200 and "第二句]]&gt;结束" in page.text
    assert '<a href="http://evil' not in page.text


def test_a_late_answer_with_bad_characters_is_read_in_the_chat_and_on_the_page(make_bot, fake_llm):
    wechat = make_bot()
    in_session(wechat)
    fake_llm.rules["慢一点"] = Rule(latency=3.2, content=f"慢的回答{UNCARRIABLE}完")
    reply = wechat.say("慢一点")
    url = link_in(reply).replace("https://bot.example.com", wechat.url)
    time.sleep(1.0)
    page = requests.get(url, timeout=5)
    assert page.status_code == 200 and "慢的回答完" in page.text
    assert wechat.say("继续") == "关于「慢一点」：\n\n慢的回答完"


def test_model_text_is_cleaned_for_the_chat():
    from mpbot.formatting import markdown_to_text, no_anchors, xml_safe

    assert xml_safe(f"a{UNCARRIABLE}b\t\n\r😀") == "ab\t\n\r😀"
    assert no_anchors('<A HREF="x">y</A> and <a\nhref=z>w</a >') == "y (x) and w (z)"
    assert no_anchors("< a href='u'>broken") == "＜ a href='u'>broken"
    assert no_anchors("vector<array> and a<b") == "vector<array> and a<b", "other angle brackets stay"
    text = markdown_to_text('看<a href="weixin://bizmsgmenu?msgmenucontent=/stop&msgmenuid=1">这里</a>')
    assert "<a" not in text and "这里 (weixin://bizmsgmenu" in text
    code = markdown_to_text('例子：\n```html\n  <a href="https://example.com">链接</a>\n```\n<a\nhref="u">跨行</a>')
    assert '  ＜a href="https://example.com">链接＜/a>' in code, "code reads as written, with no anchor"
    assert "<a" not in code.replace("＜a", "")
    # Markdown around the tag hides it from a first look; taking the Markdown out must not make one.
    hiding = ['<**a** href="http://evil">x<**/a**>', '<`a href="u"`>x<`/a`>', "<~~a~~ href=u>x", "<[a](a) href=u>x"]
    for hidden in hiding:
        shown = markdown_to_text(f"点{hidden}领奖")
        assert not re.search(r"<\s*/?\s*a\b", shown, re.I), (hidden, shown)


# --- 5. malformed values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timestamp", "²"),
        ("timestamp", "１７００"),
        ("timestamp", "1" * 40),
        ("nonce", "a b"),
        ("nonce", "n" * 200),
        ("nonce", "随机"),
    ],
)
def test_a_malformed_query_value_is_a_fast_400(bot, field, value):
    query = {**bot.signed_query(), field: value}
    query["signature"] = sha1_signature(bot.token, query["timestamp"], query["nonce"])
    for method in ("GET", "POST"):
        started = time.monotonic()
        response = requests.request(method, f"{bot.url}/wechat", params={**query, "echostr": "1"}, timeout=5)
        assert response.status_code == 400, (method, response.status_code, response.text)
        assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("openid", ["o" * 129, "user 1", "用户", "a\tb"])
def test_a_malformed_openid_is_a_400(bot, fake_llm, openid):
    response = bot.post(text_xml("/chatgpt", bot.new_msgid(), openid=openid))
    assert response.status_code == 400


def test_a_malformed_echostr_is_a_400(bot):
    params = {**bot.signed_query(), "echostr": "<script>alert(1)</script>"}
    assert requests.get(f"{bot.url}/wechat", params=params, timeout=5).status_code == 400


CURSORS = ["5-3", "9" * 40, "1-" + "9" * 25, "-1", "1e3", "٣", "0x10", "18446744073709551616-0"]


@pytest.mark.parametrize("cursor", CURSORS)
def test_a_poll_cursor_is_a_fast_200_or_400_never_5xx(make_bot, fake_llm, cursor):
    wechat = make_bot(MPBOT_PAGE_POLL=0.5)
    in_session(wechat)
    msgid = wechat.new_msgid()
    assert wechat.deliver(text_xml("问一个", msgid))[-1].status == 200
    answer_url = wechat.app.mpbot.links.url(str(msgid)).replace("https://bot.example.com", wechat.url)
    started = time.monotonic()
    response = requests.get(f"{answer_url}/poll", params={"after": cursor}, timeout=5)
    assert response.status_code in (200, 400), (response.status_code, response.text)
    assert time.monotonic() - started < 1.0
    if cursor != "5-3":  # the only well-formed one: a stream id
        assert response.status_code == 400


@pytest.mark.parametrize("token", ["a" * 500, "not a token", "x.y.z", "%00", "Zm9v.YmFy"])
def test_a_malformed_page_link_is_a_400_or_404_page(bot, token):
    for path in (f"/answer/{token}", f"/history/{token}", f"/answer/{token}/poll"):
        response = requests.get(f"{bot.url}{path}", timeout=5)
        assert response.status_code in (400, 404), (path, response.status_code)


# --- 6. forwarded headers, long-polls, /metrics, /healthz --------------------------------------


def test_forwarded_for_is_believed_only_from_named_proxies():
    from mpbot.guard import Proxies

    proxies = Proxies(["127.0.0.1", "10.0.0.0/8"])
    environ = {"REMOTE_ADDR": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}
    assert proxies.client(environ) == "203.0.113.9", "anyone else's header is ignored"
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 198.51.100.7"}
    assert proxies.client(environ) == "198.51.100.7", "the nearest hop a trusted proxy wrote"
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 198.51.100.7, 10.1.2.3"}
    assert proxies.client(environ) == "198.51.100.7", "trusted hops are skipped"
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "not-an-ip"}
    assert proxies.client(environ) == "127.0.0.1"
    assert Proxies(["*"]).client({"REMOTE_ADDR": "8.8.8.8", "HTTP_X_FORWARDED_FOR": "1.1.1.1"}) == "1.1.1.1"
    assert Proxies([]).client({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1"}) == "127.0.0.1"
    # A server bound to [::] sees IPv4 peers as ::ffff:a.b.c.d.
    mapped = {"REMOTE_ADDR": "::ffff:127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}
    assert proxies.client(mapped) == "1.2.3.4"
    assert proxies.client({"REMOTE_ADDR": "::ffff:203.0.113.9"}) == "203.0.113.9"
    assert Proxies.local({"REMOTE_ADDR": "::ffff:127.0.0.1"}) and not Proxies.local({"REMOTE_ADDR": "::ffff:1.2.3.4"})


def test_a_bad_proxy_list_is_refused_at_start():
    from mpbot.config import load_config
    from mpbot.errors import ConfigError

    with pytest.raises(ConfigError, match="MPBOT_FORWARDED_ALLOW_IPS"):
        load_config({**SHARED, "MPBOT_FORWARDED_ALLOW_IPS": ["localhost"]})


def test_polls_are_capped_per_link_per_client_and_in_all():
    from mpbot.guard import Polls

    polls = Polls(per_link=2, per_client=2, total=4)
    with polls.slot("a", "c1") as one, polls.slot("a", "c2") as two, polls.slot("a", "c3") as three:
        assert one and two and not three, "two per link"
        with polls.slot("b", "c1") as four, polls.slot("c", "c1") as five:
            assert four and not five, "two per client"
            with polls.slot("d", "c9") as six, polls.slot("e", "c8") as seven:
                assert six and not seven, "four in all"
    with polls.slot("a", "c1") as again:
        assert again, "slots are given back"
    assert not polls.held


def latest(url: str) -> str:
    """The poll cursor past everything written so far (the next poll waits for news)."""
    return requests.get(url, timeout=5).json()["cursor"]


def poll_in_thread(url: str, results: list, **headers) -> threading.Thread:
    cursor = latest(url)

    def run():
        started = time.monotonic()
        response = requests.get(url, params={"after": cursor}, headers=headers, timeout=10)
        results.append((response.json(), time.monotonic() - started))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_long_polls_over_a_limit_answer_at_once_and_ask_the_page_to_wait(make_bot, fake_llm):
    wechat = make_bot(
        MPBOT_PAGE_POLL=1.5, MPBOT_POLLS_PER_LINK=2, MPBOT_POLLS_PER_CLIENT=3, MPBOT_FORWARDED_ALLOW_IPS=[]
    )
    in_session(wechat)
    fake_llm.rules["慢"] = Rule(latency=8)
    url = link_in(wechat.say("慢")).replace("https://bot.example.com", wechat.url) + "/poll"
    held: list = []
    threads = [poll_in_thread(url, held) for _ in range(2)]
    time.sleep(0.3)
    started = time.monotonic()
    # A third poll on the link, even claiming to come from elsewhere (no proxy is trusted here).
    response = requests.get(url, params={"after": latest(url)}, headers={"X-Forwarded-For": "1.2.3.4"}, timeout=5)
    assert time.monotonic() - started < 0.5, "answered at once"
    view = response.json()
    assert response.status_code == 200 and view["wait"] == 5 and view["live"]
    for thread in threads:
        thread.join()
    assert all(seconds >= 1.4 and "wait" not in shown for shown, seconds in held), "the first two waited"


def test_long_polls_per_client_use_the_address_a_trusted_proxy_names(make_bot, fake_llm):
    wechat = make_bot(MPBOT_PAGE_POLL=1.5, MPBOT_POLLS_PER_CLIENT=1)  # loopback is a trusted proxy
    in_session(wechat)
    fake_llm.rules["慢"] = Rule(latency=8)
    url = link_in(wechat.say("慢")).replace("https://bot.example.com", wechat.url) + "/poll"
    held: list = []
    thread = poll_in_thread(url, held, **{"X-Forwarded-For": "198.51.100.1"})
    time.sleep(0.3)
    cursor = latest(url)
    same = requests.get(url, params={"after": cursor}, headers={"X-Forwarded-For": "198.51.100.1"}, timeout=5)
    other = requests.get(url, params={"after": cursor}, headers={"X-Forwarded-For": "198.51.100.2"}, timeout=5)
    thread.join()
    assert "wait" not in other.json(), "another client has a slot of its own"
    assert same.json()["wait"] == 5, "the same client is over its limit"


def test_metrics_answer_only_this_host_without_a_token(bot):
    assert requests.get(f"{bot.url}/metrics", timeout=5).status_code == 200, "loopback, not through a proxy"
    proxied = requests.get(f"{bot.url}/metrics", headers={"X-Forwarded-For": "203.0.113.5"}, timeout=5)
    assert proxied.status_code == 403 and "MPBOT_METRICS_TOKEN" in proxied.text
    # A proxy that names no client still marks the request as forwarded.
    assert requests.get(f"{bot.url}/metrics", headers={"X-Real-IP": "1.1.1.1"}, timeout=5).status_code == 403


def test_refusals_are_counted_by_reason(bot):
    bot.post(text_xml("/help", 1), query={**bot.signed_query(), "signature": "0" * 40})
    bot.post(text_xml("/help", 1), query=bot.signed_query(timestamp=str(int(time.time()) - 3600)))
    body = requests.get(f"{bot.url}/metrics", timeout=5).text
    assert 'mpbot_requests_refused_total{reason="signature"} 1.0' in body
    assert 'mpbot_requests_refused_total{reason="stale"} 1.0' in body


@pytest.mark.slow
def test_healthz_and_metrics_say_what_is_wrong_without_hosts_or_urls():
    port = free_port()
    app = create_app({**SHARED, **FAST, "REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"})
    url, server = serve(app)
    try:
        for path in ("/healthz", "/metrics"):
            started = time.monotonic()
            response = requests.get(f"{url}{path}", timeout=10)
            assert response.status_code == 503
            assert time.monotonic() - started < 5
            for secret in (str(port), "127.0.0.1", "hunter2", "redis://"):
                assert secret not in response.text, (path, response.text)
        assert "Redis" in requests.get(f"{url}/healthz", timeout=10).text, "it says what is wrong"
        # A message cannot be checked against the signatures seen: it is not acted on, and the
        # subscriber reads the apology (never WeChat's error).
        wechat = WeChat(url, TOKEN, timeout=8)
        started = time.monotonic()
        response = wechat.post(text_xml("/chatgpt", wechat.new_msgid()))
        assert response.status_code == 200 and time.monotonic() - started < 4.5
        assert wechat.reply_text(response.text) == "服务暂时有点忙，请稍后再试。"
    finally:
        server.shutdown()
        server.server_close()
        app.mpbot.close()


# --- 7. what is kept --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_subscriber_with_nothing_pending_is_kept_no_longer_than_a_session(make_bot, fake_llm, mode, redis_url):
    if mode == "embedded":
        pytest.skip("the TTL is read from Redis")
    wechat = make_bot()
    client = redis.Redis.from_url(redis_url)
    key = Keys(SHARED_PREFIX).reader("user-1")
    in_session(wechat)
    assert wechat.say("快问题") == "答：快问题"
    assert 0 < client.pttl(key) / 1000 <= 300, "nothing pending: kept as long as a session"
    fake_llm.rules["慢问题"] = Rule(latency=3.2)
    wechat.say("慢问题")  # the link: an answer the subscriber has not read
    assert client.pttl(key) / 1000 > 24 * 3600, "an unread answer is kept as long as answers are"
    time.sleep(1.0)
    assert wechat.say("继续") == "关于「慢问题」：\n\n答：慢问题"
    assert client.pttl(key) / 1000 <= 300
