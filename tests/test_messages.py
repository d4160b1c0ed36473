"""Voice, media and events, from the official samples."""

import os
import re

from fakes import WeChat

# Official samples, copied with their README (which says where each comes from): see tests/data/wechat-vectors.
MESSAGES = os.path.join(os.path.dirname(__file__), "data", "wechat-vectors", "messages")


def sample(name: str, openid: str | None = None, msgid: int | None = None) -> bytes:
    with open(os.path.join(MESSAGES, name), encoding="utf-8") as f:
        xml = f.read()
    if openid:
        xml = re.sub(
            r"<FromUserName><!\[CDATA\[[^]]*\]\]></FromUserName>",
            f"<FromUserName><![CDATA[{openid}]]></FromUserName>",
            xml,
        )
    if msgid:
        xml = re.sub(r"<MsgId>\d+</MsgId>", f"<MsgId>{msgid}</MsgId>", xml)
    return xml.encode()


def test_voice_with_recognition_is_answered_as_text(bot, fake_llm):
    bot.say("/chatgpt", openid="fromUser")
    log = bot.deliver(sample("voice_recognition.xml", msgid=WeChat.new_msgid()))
    assert bot.reply_text(log[-1].body) == "你说：腾讯微信团队\n\n答：腾讯微信团队", "what was heard, first"


def test_voice_without_recognition_asks_to_type(bot, fake_llm):
    bot.say("/chatgpt", openid="fromUser")
    response = bot.post(sample("voice.xml", msgid=WeChat.new_msgid()))
    assert "打字" in bot.reply_text(response.text)
    assert fake_llm.calls_for("") == 0


def test_media_messages_get_a_polite_reply_saying_what_the_bot_understands(bot, fake_llm):
    bot.say("/chatgpt", openid="fromUser")
    for name in ("video.xml", "shortvideo.xml", "location.xml", "link.xml"):
        response = bot.post(sample(name))
        assert response.status_code == 200
        assert "文字" in bot.reply_text(response.text), name
        if "video" in name:
            assert "视频" in bot.reply_text(response.text) and "图片" in bot.reply_text(response.text)
    assert len(fake_llm.calls) == 0


def test_subscribe_gets_a_welcome_that_says_how_to_start(bot):
    for name in ("event_subscribe.xml", "event_subscribe_qrscene.xml"):
        text = bot.reply_text(bot.post(sample(name)).text)
        assert "欢迎" in text and "/chatgpt" in text


def test_unsubscribe_forgets_the_subscriber(bot, fake_llm):
    bot.say("/chatgpt", openid="FromUser")
    assert bot.say("还在吗", openid="FromUser") == "答：还在吗"
    assert bot.post(sample("event_unsubscribe.xml")).text == "success"
    assert "/chatgpt" in bot.say("还在吗", openid="FromUser")


def test_an_unsubscribe_retried_by_wechat_is_handled_once(bot, fake_llm):
    body = sample("event_unsubscribe.xml")
    assert bot.post(body).status_code == 200
    bot.say("/chatgpt", openid="FromUser")  # subscribed again, new session
    assert bot.post(body).status_code == 200  # WeChat's retry of the old event
    assert bot.say("我回来了", openid="FromUser") == "答：我回来了"


def test_other_events_get_success(bot):
    for name in ("event_click.xml", "event_view.xml", "event_scan.xml", "event_location.xml"):
        response = bot.post(sample(name))
        assert (response.status_code, response.text) == (200, "success"), name


def test_text_with_article_fields_is_answered(bot, fake_llm):
    bot.say("/chatgpt", openid="fromUser")
    log = bot.deliver(sample("text_with_msgdataid.xml", msgid=WeChat.new_msgid()))
    assert bot.reply_text(log[-1].body) == "答：this is a test"
