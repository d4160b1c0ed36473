"""Every message type and event WeChat sends, through the signed webhook: real XML (tests/data,
with where each sample comes from), in plaintext, compatible and safe mode, in both modes."""

import glob
import logging
import os
import re
import time

import pytest

from fakes import Rule, WeChat, aes_encrypt, sha1_signature
from mpbot.emoticons import readable

DATA = os.path.join(os.path.dirname(__file__), "data")
SAMPLES = sorted(
    glob.glob(os.path.join(DATA, "wechat-samples", "*.xml"))
    + [p for p in glob.glob(os.path.join(DATA, "wechat-vectors", "messages", "*.xml")) if "reply_" not in p]
)
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx2c2769f8efd9abc2"
PLACEHOLDER = "【收到不支持的消息类型，暂无法显示】"


def name_of(path: str) -> str:
    return os.path.basename(path)


def sample(path: str, openid: str | None = None) -> bytes:
    """A sample as WeChat would send it now: a new MsgId, this moment's CreateTime (events are
    told apart by sender and time), and the given subscriber."""
    with open(path, encoding="utf-8") as f:
        xml = f.read()
    xml = re.sub(r"<MsgId>\s*\d+\s*</MsgId>", f"<MsgId>{WeChat.new_msgid()}</MsgId>", xml)
    xml = re.sub(r"<(createTime|CreateTime)>\s*\d+\s*</\1>", rf"<\1>{int(time.time() * 1000) % 10**10}</\1>", xml)
    if openid:
        xml = re.sub(
            r"<(fromUserName|FromUserName)>\s*<!\[CDATA\[[^]]*\]\]>\s*</\1>", rf"<\1><![CDATA[{openid}]]></\1>", xml
        )
    return xml.encode()


def expected(name: str, config) -> str:
    """What a subscriber outside a chat sees for a sample ("success": no reply at all)."""
    if name.startswith("event_subscribe") and "_msg_" not in name:
        return config.text("welcome")
    if name.startswith("event_"):
        return "success"
    if name.startswith("text_unsupported_sticker"):
        return config.text("sticker")
    if name.startswith(("text", "voice_recognition", "image")):  # a question, outside a chat
        return config.text("hint")
    if name == "voice.xml":
        return config.text("voice_unrecognised")  # no Recognition, and no AppSecret to hear it
    if name.startswith(("video", "shortvideo")):
        return config.text("video")
    return config.text("unsupported")  # location, link, file


def compatible(wechat: WeChat, body: bytes):
    """Compatible mode, as WeChat sends it: the plaintext fields and <Encrypt> of the same message."""
    encrypted = aes_encrypt(wechat.aes_key, wechat.appid, body)
    query = wechat.signed_query()
    query.update(
        encrypt_type="aes", msg_signature=sha1_signature(wechat.token, query["timestamp"], query["nonce"], encrypted)
    )
    body = re.sub(rb"\s*<Encrypt>.*?</Encrypt>", b"", body, flags=re.S)  # a capture's own, under another key
    both = body.replace(b"</xml>", f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>".encode())
    return wechat.post(both, query=query)


def seen(wechat: WeChat, response, safe: bool) -> str:
    assert response.status_code == 200, response.text[:300]
    if response.text == "success":
        return "success"
    assert response.text, "an empty reply: WeChat shows nothing, and nobody knows the message was taken"
    return wechat.reply_text(response.text, safe=safe)


@pytest.mark.parametrize("crypto", ["plaintext", "compatible", "safe"])
@pytest.mark.parametrize("path", SAMPLES, ids=name_of)
def test_every_message_and_event_gets_a_200_and_a_fitting_reply(make_bot, fake_llm, path, crypto):
    wechat = make_bot() if crypto == "plaintext" else make_bot(aes_key=AES_KEY, appid=APPID)
    body = sample(path, openid=f"o-{WeChat.new_msgid()}")
    if crypto == "plaintext":
        response = wechat.post(body)
    elif crypto == "safe":
        response = wechat.post(body, safe=True)
    else:
        response = compatible(wechat, body)
    assert seen(wechat, response, safe=crypto != "plaintext") == expected(name_of(path), wechat.app.mpbot.config)
    assert fake_llm.calls == [], "nothing here is a question outside a chat"


def test_pic_events_that_break_werobots_parser_get_success_and_one_log_line(bot, caplog):
    for name in ("event_pic_photo_or_album_count_mismatch.xml", "event_pic_weixin_empty_piclist_cased.xml"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mpbot"):
            response = bot.post(sample(os.path.join(DATA, "wechat-samples", name)))
        assert (response.status_code, response.text) == (200, "success"), name
        lines = [r for r in caplog.records if r.name.startswith("mpbot") and "cannot read" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in caplog.records]


def test_an_unknown_type_or_event_gets_success_and_one_log_line(bot, caplog):
    now = int(time.time())
    unknown = [
        f"<xml><ToUserName>gh</ToUserName><FromUserName>u-1</FromUserName><CreateTime>{now}</CreateTime>"
        f"<MsgType>miniprogrampage</MsgType><Title>t</Title><MsgId>{WeChat.new_msgid()}</MsgId></xml>",
        f"<xml><ToUserName>gh</ToUserName><FromUserName>u-1</FromUserName><CreateTime>{now + 1}</CreateTime>"
        "<MsgType>event</MsgType><Event>some_event_wechat_adds_next_year</Event></xml>",
        f"<xml><ToUserName>gh</ToUserName><FromUserName>u-1</FromUserName><CreateTime>{now + 2}</CreateTime>"
        "<MsgType>event</MsgType></xml>",  # no Event at all
    ]
    for xml in unknown:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mpbot"):
            response = bot.post(xml.encode())
        assert (response.status_code, response.text) == (200, "success"), xml
        lines = [r for r in caplog.records if "no handler" in r.getMessage() or "cannot read" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in caplog.records]


def test_a_sticker_is_never_a_question(bot, fake_llm):
    assert "对话已开始" in bot.say("/chatgpt")
    sticker = bot.say(PLACEHOLDER)
    assert sticker == bot.app.mpbot.config.text("sticker")
    assert fake_llm.calls == []


@pytest.mark.slow
def test_a_sticker_fetches_an_answer_that_waits_like_continue(bot, fake_llm):
    assert "对话已开始" in bot.say("/chatgpt")
    fake_llm.rules["难题"] = Rule(latency=3.2, content="难题的答案。")
    assert "回答还在生成中" in bot.say("难题")
    time.sleep(0.8)
    assert bot.say(PLACEHOLDER) == bot.app.mpbot.config.text("answer_quote", question="难题") + "难题的答案。"
    assert [call["messages"][-1]["content"] for call in fake_llm.calls] == ["难题"]


def test_emoticons_reach_the_model_as_words(bot, fake_llm):
    assert "对话已开始" in bot.say("/chatgpt", openid="fromUser")
    path = os.path.join(DATA, "wechat-samples", "text_emoticon_multi.xml")
    log = bot.deliver(sample(path, openid="fromUser"))
    asked = fake_llm.calls[-1]["messages"][-1]["content"]
    assert asked == "（表情：微笑）（表情：撇嘴）（表情：色）（表情：发呆）（表情：得意）"
    assert bot.reply_text(log[-1].body) == "答：" + asked
    assert bot.say("看这个[微笑]，还有 http://example.com/:ok", openid="fromUser") == (
        "答：看这个（表情：微笑），还有 http://example.com/:ok"
    )


def test_what_only_looks_like_an_emoticon_is_left_alone():
    kept = ["https://example.com/:?q=1", "[OK] Started nginx", "GET /:v/users", "arr[Cake] = 1", "echo $PATH/::)"]
    assert [readable(text) for text in kept] == kept
    assert readable("好的/::)，(/::B) /:ok") == "好的（表情：微笑），(（表情：色）) （表情：OK）"
    assert readable("在吗?/::)") == "在吗?（表情：微笑）" and readable("666/::D") == "666（表情：呲牙）"


# --- the custom menu ------------------------------------------------------------------------------


def click(wechat: WeChat, key: str, openid: str = "menu-user", event: str = "CLICK", at: int | None = None) -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{at or int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[{event}]]></Event><EventKey><![CDATA[{key}]]></EventKey></xml>"
    ).encode()


def test_menu_buttons_reply_or_run_their_command(make_bot, fake_llm, caplog):
    wechat = make_bot(
        MPBOT_MENU={"V1001_ABOUT": "我们是一家咖啡店。", "V1002_START": "/chatgpt", "V1003_HELP": "/help"}
    )
    shown = wechat.reply_text(wechat.post(click(wechat, "V1001_ABOUT")).text)
    assert shown == "我们是一家咖啡店。"
    with caplog.at_level(logging.INFO, logger="mpbot"):
        unknown = wechat.post(click(wechat, "V9999_GONE"))
    assert (unknown.status_code, unknown.text) == (200, "success")
    assert any("not in MPBOT_MENU" in r.getMessage() for r in caplog.records)
    second = int(time.time()) - 1
    assert "可用命令" in wechat.reply_text(wechat.post(click(wechat, "V1003_HELP", at=second)).text)
    start = click(wechat, "V1002_START", at=second)  # another button within the same second
    assert "对话已开始" in wechat.reply_text(wechat.post(start).text)
    assert "对话已开始" in wechat.reply_text(wechat.post(start).text), "WeChat's retry of the click: the same reply"
    assert wechat.say("你好", openid="menu-user") == "答：你好", "the button started a chat"
    waitmsg = os.path.join(DATA, "wechat-samples", "event_scancode_waitmsg.xml")
    body = sample(waitmsg).replace(b"<![CDATA[6]]>", b"<![CDATA[V1001_ABOUT]]>")
    assert wechat.reply_text(wechat.post(body).text) == "我们是一家咖啡店。", "a scan-and-wait button replies too"


# --- always on --------------------------------------------------------------------------------------


def test_always_on_answers_every_text_without_a_start_command(make_bot, fake_llm):
    wechat = make_bot(MPBOT_ALWAYS_ON=True)
    config = wechat.app.mpbot.config
    welcome = wechat.reply_text(
        wechat.post(sample(os.path.join(DATA, "wechat-vectors", "messages", "event_subscribe.xml"))).text
    )
    assert welcome == config.text("welcome") and "直接发送问题" in welcome and "AI 生成" in welcome
    assert wechat.say("你好", openid="a-1") == "答：你好"
    assert wechat.say("你好", openid="a-2") == "答：你好", "anyone, with no /chatgpt"
    assert wechat.say("/clear", openid="a-1") == config.text("cleared")
    assert wechat.say("/stop", openid="a-1") == config.text("stopped") == config.TEXTS["stopped_always_on"]
    assert wechat.say("/stop", openid="a-1") == config.TEXTS["not_started_always_on"]
    assert wechat.say("还在吗", openid="a-1") == "答：还在吗", "a new chat starts by itself"
    help_text = wechat.say("/help", openid="a-1")
    assert "直接发送问题" in help_text and "/chatgpt" not in help_text
    # The history sent with the question is the new chat's only.
    assert [m["content"] for m in fake_llm.calls[-1]["messages"] if m["role"] == "user"] == ["还在吗"]


def test_a_blank_text_is_no_question(make_bot, fake_llm):
    wechat = make_bot(MPBOT_ALWAYS_ON=True)
    for blank in ("   ", "\n\t"):
        assert wechat.say(blank) == wechat.app.mpbot.config.text("blank")
    assert fake_llm.calls == []


def test_without_always_on_a_text_outside_a_chat_gets_the_hint(bot, fake_llm):
    assert bot.say("你好") == bot.app.mpbot.config.text("hint")
    assert fake_llm.calls == []
