"""The webhook as WeChat (and whoever forges it) sees it: signatures, safe mode, bad input."""

import json
import os
import time

import pytest
import requests

from fakes import aes_decrypt, aes_encrypt, sha1_signature, text_xml

# Official samples, copied with their README (which says where each comes from) from the team's shared
# wechat-vectors folder, so that a clone tests alone.
VECTORS = os.path.join(os.path.dirname(__file__), "data", "wechat-vectors")
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx2c2769f8efd9abc2"


def vector(name):
    with open(os.path.join(VECTORS, "crypto", name), encoding="utf-8") as f:
        return json.load(f)


def test_url_check_echoes_echostr_for_the_official_sample(make_bot):
    doc = vector("official_message_push_doc_sample.json")
    check = doc["url_verification_get"]
    # The sample was signed years ago: the freshness check is turned off to check the signature.
    wechat = make_bot(WECHAT_TOKEN=doc["token"], MPBOT_MAX_CLOCK_SKEW=0)
    params = {k: check[k] for k in ("signature", "timestamp", "nonce", "echostr")}
    response = requests.get(f"{wechat.url}/wechat", params=params, timeout=5)
    assert response.status_code == 200
    assert response.text == check["expected_response_body"]


def test_url_check_with_a_wrong_signature_is_forbidden(bot):
    params = {**bot.signed_query(), "echostr": "12345"}
    params["signature"] = "0" * 40
    response = requests.get(f"{bot.url}/wechat", params=params, timeout=5)
    assert response.status_code == 403
    assert "12345" not in response.text


@pytest.mark.slow
def test_forged_post_is_forbidden_and_runs_nothing(bot, fake_llm):
    assert "对话已开始" in bot.say("/chatgpt")
    query = {**bot.signed_query(), "signature": sha1_signature("not-the-token", "1", "2")}
    response = bot.post(text_xml("偷偷问一句", bot.new_msgid()), query=query)
    assert response.status_code == 403
    time.sleep(0.3)
    assert fake_llm.calls_for("偷偷问一句") == 0


def test_post_without_signature_is_forbidden(bot):
    response = requests.post(f"{bot.url}/wechat", data=text_xml("hi", 1), timeout=5)
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"hello, not xml", 400),
        (b"<xml><ToUserName>a</ToUserName>", 400),
        (b"<xml>text only</xml>", 400),
        (b"<notxml><a>1</a></notxml>", 400),
        # Signed, well-formed, and no message to answer: "success", never WeChat's error.
        (b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName></xml>", 200),
        (
            b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>"
            b"<MsgType>text</MsgType><Content>hi</Content></xml>",
            400,
        ),
        (
            b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>x</CreateTime>"
            b"<MsgType>text</MsgType><Content>hi</Content><MsgId>1</MsgId></xml>",
            400,
        ),
        (b"<?xml version='1.0'?><!DOCTYPE xml [<!ENTITY a 'boom'>]><xml><Content>&a;</Content></xml>", 400),
        (b'<!DOCTYPE xml SYSTEM "file:///etc/passwd"><xml></xml>', 400),
        (b"\xff\xfe\x00<\x00x", 400),
        (b"<xml>" + b"<a>" * 100_000 + b"</xml>", 413),
    ],
    ids=[
        "empty",
        "not xml",
        "unclosed",
        "no fields",
        "wrong root",
        "missing fields",
        "text without MsgId",
        "bad CreateTime",
        "entity",
        "external DTD",
        "binary",
        "over 64 KiB",
    ],
)
def test_bad_bodies_get_a_fast_4xx(bot, body, status):
    started = time.monotonic()
    response = bot.post(body)
    assert response.status_code == status
    assert time.monotonic() - started < 1.0


def test_billion_laughs_is_refused_before_expansion(bot):
    lol = b"".join(b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10 if i else b"lol") for i in range(10))
    body = b"<?xml version='1.0'?><!DOCTYPE xml [" + lol + b"]><xml><Content>&lol9;</Content></xml>"
    started = time.monotonic()
    assert bot.post(body).status_code == 400
    assert time.monotonic() - started < 1.0
    assert requests.get(f"{bot.url}/healthz", timeout=5).status_code == 200


def test_official_compatible_mode_sample_is_decrypted_and_answered_encrypted(make_bot):
    doc = vector("official_wxbizmsgcrypt_sample.json")
    # The sample was signed in 2014: the replay window is turned off to check the crypto.
    wechat = make_bot(
        WECHAT_TOKEN=doc["token"], aes_key=doc["encoding_aes_key"], appid=doc["appid"], MPBOT_MAX_CLOCK_SKEW=0
    )
    query = {
        "timestamp": doc["timestamp"],
        "nonce": doc["nonce"],
        "msg_signature": doc["msg_signature"],
        "signature": sha1_signature(doc["token"], doc["timestamp"], doc["nonce"]),
        "encrypt_type": "aes",
    }
    response = wechat.post(doc["post_body_xml"].encode(), query=query)
    assert response.status_code == 200
    text = wechat.reply_text(response.text, safe=True)
    assert "/chatgpt" in text  # the sample's user has no session: the hint
    import xml.etree.ElementTree as ET

    envelope = ET.fromstring(response.text)
    inner, appid = aes_decrypt(doc["encoding_aes_key"], envelope.findtext("Encrypt"))
    assert appid == doc["appid"]
    assert ET.fromstring(inner).findtext("ToUserName") == "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
    # The reply's own signature holds.
    assert envelope.findtext("MsgSignature") == sha1_signature(
        doc["token"], envelope.findtext("TimeStamp"), envelope.findtext("Nonce"), envelope.findtext("Encrypt")
    )


def test_a_signed_message_replayed_later_is_refused(bot, fake_llm):
    stale = bot.signed_query(timestamp=str(int(time.time()) - 301))
    response = bot.post(text_xml("旧消息", bot.new_msgid()), query=stale)
    assert response.status_code == 403 and "timestamp" in response.text
    future = bot.signed_query(timestamp=str(int(time.time()) + 301))
    assert bot.post(text_xml("旧消息", bot.new_msgid()), query=future).status_code == 403
    assert bot.post(text_xml("旧消息", bot.new_msgid()), query=bot.signed_query(timestamp="1e9")).status_code == 400
    assert len(fake_llm.calls) == 0
    # Within the window, as WeChat's own retries are, it is taken.
    recent = bot.signed_query(timestamp=str(int(time.time()) - 30))
    assert bot.post(text_xml("/help", bot.new_msgid()), query=recent).status_code == 200


def test_test_helper_encrypts_exactly_like_the_official_doc():
    doc = vector("official_message_push_doc_sample.json")
    reply = doc["encrypted_reply"]
    encrypted = aes_encrypt(doc["encoding_aes_key"], doc["appid"], reply["msg"].encode(), reply["random16"].encode())
    assert encrypted == reply["Encrypt"]


def test_safe_mode_conversation_round_trip(make_bot, fake_llm):
    wechat = make_bot(aes_key=KEY, appid=APPID)
    assert "对话已开始" in wechat.say("/chatgpt", safe=True)
    assert wechat.say("加密的问题", safe=True) == "答：加密的问题"


def test_tampered_safe_mode_message_is_forbidden(make_bot):
    wechat = make_bot(aes_key=KEY, appid=APPID)
    encrypted = aes_encrypt(KEY, APPID, text_xml("/help", wechat.new_msgid()))
    query = {**wechat.signed_query(), "encrypt_type": "aes"}
    query["msg_signature"] = sha1_signature(wechat.token, query["timestamp"], query["nonce"], encrypted)
    body = f"<xml><Encrypt><![CDATA[{encrypted[:-8]}AAAAAAA=]]></Encrypt></xml>".encode()
    assert wechat.post(body, query=query).status_code == 403


def test_safe_mode_message_for_another_appid_is_refused(make_bot):
    wechat = make_bot(aes_key=KEY, appid=APPID)
    wechat.appid = "wx0000000000000000"  # encrypts for another account
    encrypted_for_other = wechat.post(text_xml("/help", wechat.new_msgid()), safe=True)
    assert encrypted_for_other.status_code == 400


def test_previous_aes_key_still_works_after_a_key_change(make_bot):
    new_key = "B" * 43
    wechat = make_bot(aes_key=new_key, appid=APPID, WECHAT_PREVIOUS_ENCODING_AES_KEY=KEY)
    wechat.aes_key = KEY  # WeChat still uses the old key
    assert "可用命令" in wechat.say("/help", safe=True)


def test_plaintext_is_refused_on_an_encrypted_account(make_bot):
    wechat = make_bot(aes_key=KEY, appid=APPID)
    assert "可用命令" in wechat.say("/help", safe=True)
    response = wechat.post(text_xml("/help", wechat.new_msgid()))
    assert response.status_code == 403 and "可用命令" not in response.text


def test_safe_mode_message_without_a_configured_key_is_refused(bot):
    bot.aes_key, bot.appid = KEY, APPID
    assert bot.post(text_xml("/help", bot.new_msgid()), safe=True).status_code == 400


def test_healthz_reports_the_store(bot):
    response = requests.get(f"{bot.url}/healthz", timeout=5)
    assert response.status_code == 200
    assert response.text.startswith("ok")
