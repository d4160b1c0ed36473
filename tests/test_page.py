"""The answer page and the history page, served by the WSGI app: the question and the answer as
it stands, live while it grows, a clear end, safe whatever the model or the subscriber wrote."""

import re
import threading
import time

import pytest
import requests

from fakes import Rule, link_in, text_xml

SENTENCES = "".join(f"第{i}句话说完了。" for i in range(1, 21))


def in_session(wechat, openid="user-1"):
    assert "对话已开始" in wechat.say("/chatgpt", openid)


def local(wechat, url: str) -> str:
    """A link from a reply, pointed at the app under test."""
    assert url.startswith("https://bot.example.com/"), url
    return wechat.url + url.removeprefix("https://bot.example.com")


def slow_answer(wechat, fake_llm, question: str, **rule) -> str:
    """Ask a question the chat cannot wait for; the page's URL (on the app under test)."""
    fake_llm.rules[question] = Rule(**rule)
    reply = wechat.say(question)
    assert "还在生成中" in reply, reply
    return local(wechat, link_in(reply))


def poll(url: str, cursor: str = "0-0") -> dict:
    response = requests.get(f"{url}/poll", params={"after": cursor}, timeout=15)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()


@pytest.mark.slow
def test_page_shows_the_question_and_the_answer_growing_live_then_done(bot, fake_llm):
    in_session(bot)
    url = slow_answer(bot, fake_llm, "慢慢说", latency=0.2, content=SENTENCES, pieces=20, piece_delay=0.2)

    page = requests.get(url, timeout=5)
    assert page.status_code == 200
    assert '<p class="question" id="question">慢慢说</p>' in page.text
    assert "正在生成" in page.text
    assert "第1句话说完了。" in page.text, "rendered on the server with the answer as it stands"
    assert '<noscript><meta http-equiv="refresh"' in page.text, "works without JavaScript too"
    nonce = re.search(r'<script nonce="([^"]+)">', page.text).group(1)
    assert f"script-src 'nonce-{nonce}'" in page.headers["Content-Security-Policy"]

    views, cursor = [], "0-0"
    while True:
        view = poll(url, cursor)
        views.append(view)
        cursor = view["cursor"]
        if not view["live"]:
            break
        assert len(views) < 100, "the poll must wait for news, not spin"
    assert len({view["html"] for view in views}) >= 2, "the reader saw the answer grow"
    assert views[-1]["state"] == "done" and views[-1]["status"] == "回答完毕。"
    assert "第20句话说完了。" in views[-1]["html"]

    done = requests.get(url, timeout=5).text
    assert "回答完毕。" in done and "第20句话说完了。" in done
    assert "<script" not in done and "refresh" not in done, "a finished page stops updating"
    assert fake_llm.calls_for("慢慢说") == 1


@pytest.mark.slow
def test_reasoning_never_shows_on_the_page_even_while_it_streams(bot, fake_llm):
    in_session(bot)
    thinking = "<think>内心独白，" + "想" * 60 + "</think>"
    fake_llm.rules["想一想"] = Rule(latency=0.1, content=thinking + "答案是四。", pieces=8, piece_delay=0.25)
    msgid = bot.new_msgid()
    chat = threading.Thread(target=bot.deliver, args=(text_xml("想一想", msgid),))
    chat.start()
    time.sleep(0.2)
    url = local(bot, bot.app.mpbot.links.url(str(msgid)))
    views = [poll(url)]
    while views[-1]["live"]:
        views.append(poll(url, views[-1]["cursor"]))
    chat.join()
    assert all("内心独白" not in view["html"] and "think" not in view["html"] for view in views)
    assert "答案是四。" in views[-1]["html"]


@pytest.mark.slow
def test_a_poll_waits_for_new_text_and_returns_as_soon_as_it_exists(bot, fake_llm):
    in_session(bot)
    url = slow_answer(bot, fake_llm, "慢慢说", latency=0.2, content=SENTENCES, pieces=4, piece_delay=1.0)
    current = poll(url)
    started = time.monotonic()
    news = poll(url, current["cursor"])
    waited = time.monotonic() - started
    assert news["html"] != current["html"] or not news["live"]
    assert 0.05 < waited < 1.5, f"waited {waited:.2f} s for text that comes every second"


@pytest.mark.slow
def test_markdown_is_rendered_and_html_or_script_from_the_model_or_the_user_never_runs(bot, fake_llm):
    in_session(bot)
    answer = (
        "# 标题\n\n<script>alert('answer')</script>\n\n<img src=x onerror=alert(2)>\n\n"
        "[点我](javascript:alert(3)) 和 [好链接](https://example.com/a?b=1&c=2)\n\n"
        "| 列一 | 列二 |\n|---|---|\n| 1 | 2 |\n\n- 第一\n- 第二\n\n```js\nconsole.log('<b>')\n```\n"
    )
    url = slow_answer(bot, fake_llm, "<b>问题</b><script>alert('q')</script>", latency=3.2, content=answer)
    time.sleep(0.6)
    page = requests.get(url, timeout=5).text
    assert "<h1>标题</h1>" in page and "<table>" in page and "<li>第一</li>" in page
    assert "<code class=\"language-js\">console.log('&lt;b&gt;')" in page
    assert "&lt;script&gt;alert('answer')" in page and "&lt;script&gt;alert(&#39;q&#39;)" in page
    assert "&lt;b&gt;问题&lt;/b&gt;" in page
    assert "<script" not in page and "<img" not in page and "javascript:" not in page.split("[点我]")[0]
    assert 'href="javascript' not in page
    assert '<a href="https://example.com/a?b=1&amp;c=2" rel="nofollow noopener noreferrer">好链接</a>' in page
    # The live view is as safe as the page.
    assert "<script" not in poll(url)["html"]


@pytest.mark.slow
def test_a_model_failure_shows_a_clear_message_and_keeps_what_was_written(bot, fake_llm):
    in_session(bot)
    url = slow_answer(
        bot,
        fake_llm,
        "断了",
        latency=0.2,
        content="第一句。第二句。第三句。第四句。",
        pieces=4,
        piece_delay=1.0,
        break_after=3,
    )
    view = poll(url)
    while view["live"]:  # the model is asked again once (MPBOT_LLM_RETRIES in the tests), and breaks again
        view = poll(url, view["cursor"])
    assert view["state"] == "error"
    assert "回答出错" in view["status"]
    assert "第一句。" in view["html"], "the text written before the failure stays"
    page = requests.get(url, timeout=5).text
    assert "回答出错" in page and "<script" not in page


@pytest.mark.slow
def test_tampered_expired_or_wrong_kind_links_get_a_4xx_that_says_so_and_leaks_nothing(bot, fake_llm):
    in_session(bot)
    url = slow_answer(bot, fake_llm, "秘密问题", latency=3.2, content="秘密答案")
    time.sleep(0.6)
    good = requests.get(url, timeout=5)
    assert good.status_code == 200 and "秘密答案" in good.text
    assert good.headers["Referrer-Policy"] == "no-referrer"  # the token never leaves as a Referer
    assert "no-store" in good.headers["Cache-Control"]
    assert good.headers["X-Frame-Options"] == "DENY"

    token = url.rsplit("/", 1)[1]
    payload, mac = token.split(".")
    links = bot.app.mpbot.links
    msgid = links.verify(token)
    forged = {
        payload + "." + mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB"): 404,
        "garbage": 400,  # not shaped like a link at all
        "a.b.c": 400,
        links.token(msgid, now=time.time() - 10**8): 404,  # expired
        links.token(msgid, "history"): 404,  # a history link turned into an answer link
    }
    for bad, status in forged.items():
        page = requests.get(f"{bot.url}/answer/{bad}", timeout=5)
        assert page.status_code == status
        assert "链接无效或已过期" in page.text
        assert "秘密" not in page.text and msgid not in page.text
        assert requests.get(f"{bot.url}/answer/{bad}/poll", timeout=5).status_code == status
    # A valid link to an answer nobody stores (never asked, or expired).
    page = requests.get(f"{bot.url}/answer/{links.token('12345')}", timeout=5)
    assert page.status_code == 404 and "已过期或不存在" in page.text
    bad_cursor = requests.get(f"{url}/poll", params={"after": "x' OR 1"}, timeout=5)
    assert bad_cursor.status_code == 400


def test_history_links_to_a_page_of_the_sessions_questions_and_answers(bot, fake_llm):
    assert "没有进行中的对话" in bot.say("/history")
    in_session(bot)
    fake_llm.rules["第二问"] = Rule(content="**加粗**的回答")
    assert bot.say("第一问") == "答：第一问"
    bot.say("第二问")
    reply = bot.say("/history")
    url = local(bot, link_in(reply))
    assert "/history/" in url
    page = requests.get(url, timeout=5)
    assert page.status_code == 200
    # It opens with an index of the questions, each a link to its answer further down.
    index, answers = page.text.split("</nav>", 1)
    assert re.findall(r'<a href="#(q\d+)">([^<]+)</a>', index) == [("q1", "第一问"), ("q2", "第二问")]
    assert answers.index('id="q1"') < answers.index("第一问") < answers.index("答：第一问") < answers.index('id="q2"')
    assert "<strong>加粗</strong>" in answers
    assert requests.get(url.replace("/history/", "/answer/"), timeout=5).status_code == 404
    bot.say("/stop")
    assert "记录已删除" in requests.get(url, timeout=5).text


def test_the_servers_address_says_what_it_is_and_nothing_secret(bot):
    home = requests.get(f"{bot.url}/", timeout=5)
    assert home.status_code == 200 and "公众号" in home.text
    for secret in ("testtoken123", "test-secret-key", "sk-test", "fake-model", "wechat"):
        assert secret not in home.text, secret
    icon = requests.get(f"{bot.url}/favicon.ico", timeout=5)
    assert icon.status_code == 200 and icon.headers["Content-Type"] == "image/svg+xml"
    assert 'href="favicon.svg"' in home.text, "the icon, relative: it works under a proxy's sub-path"


@pytest.mark.parametrize("path", ["/nothing-here", "/answer", "/wechat/x", "/answer/a.b/poll/x"])
def test_unknown_addresses_get_the_bots_own_page_not_bottles(bot, path):
    page = requests.get(f"{bot.url}{path}", timeout=5)
    assert page.status_code == 404
    assert "这个页面不存在" in page.text and "Bottle" not in page.text and "Error:" not in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert requests.put(f"{bot.url}/", timeout=5).status_code == 405


def test_a_link_that_no_longer_works_says_what_to_do_next(bot, fake_llm):
    expired = bot.app.mpbot.links.token("12345", now=time.time() - 10**8)
    for path in (f"/answer/{expired}", f"/history/{expired}", f"/answer/{bot.app.mpbot.links.token('999')}"):
        page = requests.get(f"{bot.url}{path}", timeout=5)
        assert page.status_code == 404
        assert "发送「继续」" in page.text and "重新发送问题" in page.text, path


@pytest.mark.slow
def test_the_answer_pages_title_is_its_question(bot, fake_llm):
    in_session(bot)
    question = "为什么天空是蓝色的？" + "请详细解释一下" * 10
    url = slow_answer(bot, fake_llm, question, latency=3.2)
    title = re.search(r"<title>(.*)</title>", requests.get(url, timeout=5).text).group(1)
    assert title.startswith("为什么天空是蓝色的？") and title.endswith("…") and len(title) <= 41
