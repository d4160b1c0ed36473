"""Pictures and voice, through the signed webhook in both modes: WeChat's media API and image CDN
are a fake on 127.0.0.1 (tests/fakes.py), the model a fake OpenAI-compatible server that reads
pictures and transcribes audio; the voice is a real AMR-NB file (tests/data/voice)."""

import base64
import io
import logging
import os
import time
import wave

import pytest
import requests
from PIL import Image

from conftest import FAST, run_workers
from fakes import FakeWeChatAPI, WeChat, link_in, pictures_of, text_of
from mpbot.config import load_config
from mpbot.errors import LLMError
from mpbot.media import MediaError, host_allowed, picture_data_url, read_capped, to_wav

APPID, APPSECRET = "wxmedia0123456789", "media-test-app-secret"
QUEUE = "mpbot-media"
VOICE = os.path.join(os.path.dirname(__file__), "data", "voice", "voice.amr")
CONTINUE = "继续"
MAX_BYTES = 2_000_000


def bomb() -> bytes:
    """A valid PNG header for 100,000 x 100,000 pixels, and a few bytes of data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def photo(width: int = 3000, height: int = 2000, orientation: int | None = None, fmt: str = "JPEG") -> bytes:
    """A picture as a phone sends it: left half red, right half blue; ``orientation`` is the EXIF
    tag a phone writes when it was held on its side."""
    image = Image.new("RGB", (width, height), "red")
    image.paste(Image.new("RGB", (width // 2, height), "blue"), (width // 2, 0))
    out = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(out, fmt, exif=exif)
    else:
        image.save(out, fmt)
    return out.getvalue()


def image_xml(msgid: int, pic_url: str, media_id: str = "pic-media-1", openid: str = "user-1") -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[gh_account]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[image]]></MsgType>"
        f"<PicUrl><![CDATA[{pic_url}]]></PicUrl><MediaId><![CDATA[{media_id}]]></MediaId>"
        f"<MsgId>{msgid}</MsgId></xml>"
    ).encode()


def voice_xml(msgid: int, media_id: str = "voice-media-1", recognition: str | None = None, openid: str = "user-1"):
    heard = "" if recognition is None else f"<Recognition><![CDATA[{recognition}]]></Recognition>"
    return (
        f"<xml><ToUserName><![CDATA[gh_account]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[voice]]></MsgType>"
        f"<MediaId><![CDATA[{media_id}]]></MediaId><Format><![CDATA[amr]]></Format>{heard}"
        f"<MsgId>{msgid}</MsgId></xml>"
    ).encode()


def sent_picture(call) -> Image.Image:
    """The picture in a model call's last message (a data: URL), opened."""
    urls = pictures_of(call["messages"][-1]["content"])
    assert len(urls) == 1, call["messages"][-1]
    head, data = urls[0].split(",", 1)
    assert head == "data:image/jpeg;base64", "a data: URL, so that an endpoint that cannot reach WeChat sees it"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def deliver(wechat, body: bytes) -> str:
    log = wechat.deliver(body)
    assert log[-1].status == 200, log
    return wechat.reply_text(log[-1].body)


@pytest.fixture(scope="session")
def media_api_server():
    fake = FakeWeChatAPI(APPID, APPSECRET)
    url = fake.start()
    return fake, url


@pytest.fixture
def media_api(media_api_server):
    fake, _url = media_api_server
    fake.reset()
    yield fake
    fake.reset()


def media_settings(url: str, secret: bool = True) -> dict:
    host = url.split("://", 1)[1]
    return {
        "WECHAT_APPID": APPID,
        "WECHAT_APPSECRET": APPSECRET if secret else "",
        "WECHAT_API_BASE": url,
        "MPBOT_MEDIA_HOSTS": [host],  # the fake CDN's 127.0.0.1:port, and nothing else
        "MPBOT_VISION_MODEL": "fake-vision",
        "MPBOT_QUEUE": QUEUE,
        # (In Redis mode the job's settings are the workers': these hold for both.)
        "MPBOT_MEDIA_MAX_BYTES": MAX_BYTES,
        "MPBOT_MEDIA_TIMEOUT": 0.7,
        "MPBOT_BANNED_WORDS": ["违禁词"],
    }


@pytest.fixture(scope="session")
def media_workers(worker_env, media_api_server, tmp_path_factory):
    """RQ workers that can fetch media, as the Procfile starts them (the settings above, from the
    environment)."""
    import json

    path = tmp_path_factory.mktemp("rq-media") / "workers.log"
    settings = {**FAST, **media_settings(media_api_server[1])}
    env = {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in settings.items()}
    with run_workers({**worker_env, **env}, 2, path, QUEUE):
        yield path


@pytest.fixture
def media_bot(request, mode, make_bot, media_api_server, media_api, caplog):
    """``media_bot(**overrides)``: a bot that can fetch pictures and voice, in a chat already;
    ``media_bot.logs()`` is what the process that ran the job logged since the test began."""
    caplog.set_level(logging.INFO)
    path = request.getfixturevalue("media_workers") if mode == "redis" else None
    start = path.stat().st_size if path else 0

    def make(secret: bool = True, **overrides):
        wechat = make_bot(appid=APPID, **{**media_settings(media_api_server[1], secret), **overrides})
        assert "对话已开始" in wechat.say("/chatgpt")
        return wechat

    def logs() -> str:
        if path is None:
            return "\n".join(record.getMessage() for record in caplog.records)
        with open(path, encoding="utf-8", errors="replace") as f:
            f.seek(start)
            return f.read()

    make.logs = logs
    make.cdn = media_api_server[1] + "/pic/"
    return make


# --- pictures -------------------------------------------------------------------------------------


def test_a_picture_is_answered_with_the_picture_and_the_next_question_goes_with_it(media_bot, media_api, fake_llm):
    wechat = media_bot()
    media_api.pictures["p1"] = photo(3000, 2000, orientation=6)  # taken with the phone on its side
    reply = deliver(wechat, image_xml(wechat.new_msgid(), media_bot.cdn + "p1"))
    config = wechat.app.mpbot.config
    assert reply == "答：" + config.MPBOT_PICTURE_PROMPT
    call = fake_llm.calls[-1]
    assert call["model"] == "fake-vision", "MPBOT_VISION_MODEL answers pictures"
    assert text_of(call["messages"][-1]["content"]) == config.MPBOT_PICTURE_PROMPT
    picture = sent_picture(call)
    assert picture.size == (683, 1024), "scaled down to 1024 px, and upright as the phone was held"
    assert picture.getpixel((340, 10))[0] > 200 and picture.getpixel((340, 1010))[2] > 200, "turned, not cropped"
    assert media_api.picture_gets == 1 and media_api.media_gets == 0, "PicUrl, on an allowed host"

    # A question a moment later is about the picture: it goes with it, to the vision model.
    assert wechat.say("左边是什么颜色") == "答：左边是什么颜色"
    call = fake_llm.calls[-1]
    assert call["model"] == "fake-vision" and sent_picture(call).size == (683, 1024)
    history = [text_of(m["content"]) for m in call["messages"][1:-1]]
    assert history == ["（图片）", "答：" + config.MPBOT_PICTURE_PROMPT], "the history names the picture, no data"

    # /clear forgets the picture: the next question is text, to the usual model.
    assert "清空" in wechat.say("/clear")
    assert wechat.say("你好") == "答：你好"
    assert fake_llm.calls[-1]["model"] == "fake-model" and not pictures_of(
        fake_llm.calls[-1]["messages"][-1]["content"]
    )
    assert len(fake_llm.calls) == 3, "one model call per message"


def test_a_cdn_that_redirects_is_not_followed_and_compressed_files_are_read(media_bot, media_api, fake_llm, mode):
    wechat = media_bot()
    media_api.pictures["p1"] = photo(400, 300)
    reply = deliver(wechat, image_xml(wechat.new_msgid(), media_bot.cdn.replace("/pic/", "/moved/") + "p1"))
    assert media_api.redirects == 1 and media_api.picture_gets == 0, "the redirect to another host is not followed"
    assert reply == wechat.app.mpbot.config.text("error_picture_expired"), "then its MediaId: unknown to WeChat"

    # A CDN or a proxy that compresses: files are asked for as they are.
    media_api.gzip = True
    with open(VOICE, "rb") as f:
        media_api.media["voice-media-1"] = (f.read(), "audio/amr")
    assert deliver(wechat, image_xml(wechat.new_msgid(), media_bot.cdn + "p1")).startswith("答：")
    assert deliver(wechat, voice_xml(wechat.new_msgid())).startswith("你说：今天天气怎么样")
    media_api.revoke_tokens()  # and WeChat's errors are still read as errors
    assert deliver(wechat, voice_xml(wechat.new_msgid())).startswith("你说：")
    assert media_api.fetches == 2


def test_a_transcript_moderation_refuses_is_never_shown(media_bot, media_api, fake_llm, mode):
    wechat = media_bot()
    with open(VOICE, "rb") as f:
        media_api.media["voice-media-1"] = (f.read(), "audio/amr")
    fake_llm.transcript = "说一个违禁词"
    msgid = wechat.new_msgid()
    reply = deliver(wechat, voice_xml(msgid))
    assert reply == wechat.app.mpbot.config.text("error_banned")
    assert not fake_llm.calls
    answer = wechat.app.mpbot.answers.get(str(msgid))
    assert answer.failed and answer.question == "（语音）", "the page's question is not what was refused"


def test_a_question_long_after_the_picture_goes_alone(media_bot, media_api, fake_llm):
    wechat = media_bot(MPBOT_PICTURE_TTL=1)
    media_api.pictures["p1"] = photo(400, 300)
    assert deliver(wechat, image_xml(wechat.new_msgid(), media_bot.cdn + "p1")).startswith("答：")
    time.sleep(1.5)
    assert wechat.say("天为什么是蓝的") == "答：天为什么是蓝的"
    assert not pictures_of(fake_llm.calls[-1]["messages"][-1]["content"])


def test_a_question_goes_without_the_picture_when_it_can_no_longer_be_fetched(media_bot, media_api, fake_llm):
    wechat = media_bot()
    media_api.pictures["p1"] = photo(400, 300)
    assert deliver(wechat, image_xml(wechat.new_msgid(), media_bot.cdn + "p1")).startswith("答：")
    del media_api.pictures["p1"]  # gone from the CDN, and WeChat's API says 40007
    assert wechat.say("图里是什么") == "答：图里是什么", "answered as it stands, not with an error"
    assert not pictures_of(fake_llm.calls[-1]["messages"][-1]["content"])
    assert "failed again" in media_bot.logs()


def test_a_picture_outside_a_chat_gets_the_hint_and_no_call(make_bot, media_api_server, media_api, fake_llm):
    wechat = make_bot(appid=APPID, **media_settings(media_api_server[1]))
    media_api.pictures["p1"] = photo(400, 300)
    reply = deliver(wechat, image_xml(wechat.new_msgid(), media_api_server[1] + "/pic/p1"))
    assert reply == wechat.app.mpbot.config.text("hint")
    assert not fake_llm.calls and media_api.picture_gets == 0


def test_pictures_off_get_the_unsupported_text(media_bot, media_api, fake_llm):
    wechat = media_bot(MPBOT_PICTURES=False)
    reply = deliver(wechat, image_xml(wechat.new_msgid(), media_bot.cdn + "p1"))
    assert reply == wechat.app.mpbot.config.text("unsupported")
    assert not fake_llm.calls and media_api.picture_gets == 0


def test_a_picture_url_on_another_host_is_never_fetched(media_bot, media_api, fake_llm, mode):
    """A PicUrl is no licence to fetch anything: a host not in MPBOT_MEDIA_HOSTS is not asked.
    With the AppSecret the picture comes from WeChat's media API by its MediaId instead."""
    wechat = media_bot()
    elsewhere = media_bot.cdn.replace("127.0.0.1", "localhost") + "p1"  # the same server, by another name
    media_api.pictures["p1"] = photo(400, 300)
    media_api.media["pic-media-1"] = (photo(400, 300), "image/jpeg")
    reply = deliver(wechat, image_xml(wechat.new_msgid(), elsewhere))
    assert reply.startswith("答：")
    assert media_api.picture_gets == 0 and media_api.media_gets == 1
    assert sent_picture(fake_llm.calls[-1]).size == (400, 300), "small pictures keep their size"
    assert "PicUrl's host localhost is not in MPBOT_MEDIA_HOSTS" in media_bot.logs()

    if mode == "redis":
        return  # (the workers have the AppSecret: the rest is the web's and the job's in one process)
    # Without the AppSecret there is no other way: the subscriber is told, nothing is fetched.
    wechat = media_bot(secret=False)
    reply = deliver(wechat, image_xml(wechat.new_msgid(), elsewhere))
    assert reply == wechat.app.mpbot.config.text("error_picture_unavailable")
    assert media_api.picture_gets == 0 and media_api.media_gets == 1
    assert len(fake_llm.calls) == 1


@pytest.mark.parametrize(
    ("case", "text"),
    [
        ("expired", "error_picture_expired"),
        ("too_large", "error_picture_too_large"),
        ("not_a_picture", "error_picture_unreadable"),
        ("bomb", "error_picture_too_large"),
        ("slow", "error_picture_unavailable"),
        ("blind_model", "error_no_vision"),
    ],
)
def test_a_picture_that_cannot_be_shown_gets_a_sentence_and_a_log_line(
    media_bot, media_api, fake_llm, mode, case, text
):
    wechat = media_bot()
    url = media_bot.cdn + "p1"
    if case == "expired":  # three days later: gone from the CDN, and WeChat's API says 40007
        url = media_bot.cdn + "gone"
    elif case == "too_large":
        media_api.pictures["p1"] = os.urandom(MAX_BYTES + 1)
    elif case == "not_a_picture":
        media_api.pictures["p1"] = b"<html>not a picture</html>"
    elif case == "bomb":  # a PNG of a few bytes that claims 100,000 x 100,000 pixels
        media_api.pictures["p1"] = bomb()
    elif case == "slow":  # 20 bytes a second, from the CDN and from WeChat's API alike
        media_api.pictures["p1"] = photo(400, 300)
        media_api.media["pic-media-1"] = (photo(400, 300), "image/jpeg")
        media_api.drip = 0.05
    else:
        media_api.pictures["p1"] = photo(400, 300)
        fake_llm.blind.add("fake-vision")
    started = time.monotonic()
    reply = deliver(wechat, image_xml(wechat.new_msgid(), url))
    assert reply == wechat.app.mpbot.config.text(text), reply
    assert time.monotonic() - started < 3 * FAST["MPBOT_WECHAT_TIMEOUT"], "within WeChat's window"
    assert len(fake_llm.calls) == (1 if case == "blind_model" else 0)
    gets = media_api.picture_gets + media_api.media_gets
    # The question after it is answered as it stands: the picture is not tried again.
    assert wechat.say("你好") == "答：你好"
    assert not pictures_of(fake_llm.calls[-1]["messages"][-1]["content"])
    assert fake_llm.calls[-1]["model"] == "fake-model"
    assert media_api.picture_gets + media_api.media_gets == gets
    logs = media_bot.logs()
    kind = text.removeprefix("error_")
    assert f"kind={kind}" in logs, logs[-2000:]
    metrics = requests.get(f"{wechat.url}/metrics", timeout=5).text
    if case == "blind_model":
        assert 'mpbot_media_total{kind="picture",outcome="ok"} 1.0' in metrics
        assert 'mpbot_llm_errors_total{kind="no_vision"} 1.0' in metrics
    else:
        assert f'mpbot_media_total{{kind="picture",outcome="{kind}"}} 1.0' in metrics, metrics
        assert "mpbot_llm_errors_total{" not in metrics, "no model call failed"
    if case == "blind_model":
        assert "set MPBOT_VISION_MODEL to a model that takes pictures" in logs
    assert "base64" not in logs and "data:image" not in logs, "a picture is never written to the log"


# --- voice ----------------------------------------------------------------------------------------


def test_a_voice_message_is_fetched_heard_and_answered(media_bot, media_api, fake_llm, mode):
    wechat = media_bot()
    with open(VOICE, "rb") as f:
        media_api.media["voice-media-1"] = (f.read(), "audio/amr")
    reply = deliver(wechat, voice_xml(wechat.new_msgid()))
    assert reply == "你说：今天天气怎么样\n\n答：今天天气怎么样", "what was heard, then the answer"
    [heard] = fake_llm.transcriptions
    assert heard["model"] == b"whisper-1" and heard["file_type"] == "audio/wav"
    assert (heard["rate"], heard["channels"]) == (16000, 1)
    assert 3.0 < heard["seconds"] < 3.6, "the whole 3.3 s of speech, converted from AMR-NB"
    assert fake_llm.calls_for("今天天气怎么样") == 1
    assert media_api.media_gets == 1

    # The transcript is the question in the session's history, and on the answer page.
    assert wechat.say("再说一遍") == "答：再说一遍"
    history = [text_of(m["content"]) for m in fake_llm.calls[-1]["messages"][1:-1]]
    assert history == ["今天天气怎么样", "答：今天天气怎么样"], "history keeps the words, not 你说"
    logs = media_bot.logs()
    assert "#!AMR" not in logs and "RIFF" not in logs and "今天天气" not in logs, "no audio, no transcript"
    assert "voice-media-1" not in logs and "access_token=" not in logs


def test_wechat_s_own_recognition_is_used_when_present(media_bot, media_api, fake_llm):
    wechat = media_bot()
    reply = deliver(wechat, voice_xml(wechat.new_msgid(), recognition="明天会下雨吗"))
    assert reply == "你说：明天会下雨吗\n\n答：明天会下雨吗"
    assert media_api.media_gets == 0 and not fake_llm.transcriptions


def test_without_recognition_or_an_appsecret_the_subscriber_is_asked_to_type(media_bot, media_api, fake_llm):
    wechat = media_bot(secret=False)
    reply = deliver(wechat, voice_xml(wechat.new_msgid()))
    assert reply == wechat.app.mpbot.config.text("voice_unrecognised") and "打字" in reply
    assert media_api.media_gets == 0 and not fake_llm.calls and not fake_llm.transcriptions


@pytest.mark.parametrize(
    ("case", "text"),
    [
        ("expired", "error_voice_expired"),
        ("not_audio", "error_voice_unreadable"),
        ("stt_down", "error_voice_failed"),
        ("silence", "error_voice_empty"),
        ("too_large", "error_voice_too_large"),
    ],
)
def test_a_voice_message_that_cannot_be_heard_gets_a_sentence_and_a_log_line(
    media_bot, media_api, fake_llm, mode, case, text
):
    wechat = media_bot()
    with open(VOICE, "rb") as f:
        media_api.media["voice-media-1"] = (f.read(), "audio/amr")
    media_id = "voice-media-1"
    if case == "too_large":
        media_api.media["voice-media-1"] = (os.urandom(MAX_BYTES + 1), "audio/amr")
    elif case == "expired":
        media_id = "voice-from-last-week"
    elif case == "not_audio":
        media_api.media["voice-media-1"] = (b"#!AMR\n" + b"\xff" * 10, "audio/amr")
    elif case == "stt_down":
        fake_llm.stt_status = 503
    elif case == "silence":
        fake_llm.transcript = "  "
    reply = deliver(wechat, voice_xml(wechat.new_msgid(), media_id=media_id))
    assert reply == wechat.app.mpbot.config.text(text), reply
    assert not fake_llm.calls, "no model call for what was not heard"
    if case == "stt_down":
        assert len(fake_llm.transcriptions) == 2, "a 503 is tried once more"
    assert f"kind={text.removeprefix('error_')}" in media_bot.logs()


def test_a_refused_access_token_is_fetched_again_once(media_bot, media_api, fake_llm):
    wechat = media_bot()
    with open(VOICE, "rb") as f:
        media_api.media["voice-media-1"] = (f.read(), "audio/amr")
    assert deliver(wechat, voice_xml(wechat.new_msgid())).startswith("你说：")
    media_api.revoke_tokens()  # another tool forced a refresh: the shared token stops working
    assert deliver(wechat, voice_xml(wechat.new_msgid())).startswith("你说：")
    assert media_api.fetches == 2 and media_api.media_gets == 3


def test_a_slow_transcription_falls_back_to_the_page_and_runs_once(media_bot, media_api, fake_llm, mode):
    """Fetching and hearing count toward the message's one job: past the window, the page link;
    the next message reads the answer; one transcription, one model call."""
    wechat = media_bot()
    with open(VOICE, "rb") as f:
        media_api.media["voice-media-1"] = (f.read(), "audio/amr")
    fake_llm.stt_latency = 3.5  # past the tests' 3 s window
    reply = deliver(wechat, voice_xml(wechat.new_msgid()))
    link = link_in(reply).replace("https://bot.example.com", wechat.url)
    assert requests.get(link, timeout=5).status_code == 200
    time.sleep(1.5)
    assert wechat.say(CONTINUE).endswith("你说：今天天气怎么样\n\n答：今天天气怎么样")
    page = requests.get(link, timeout=5).text
    assert "今天天气怎么样" in page, "the page names the question as heard"
    assert len(fake_llm.transcriptions) == 1 and fake_llm.calls_for("今天天气怎么样") == 1


def test_video_gets_a_text_saying_what_the_bot_takes(media_bot, fake_llm):
    wechat = media_bot()
    for kind in ("video", "shortvideo"):
        body = (
            f"<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName><![CDATA[user-1]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[{kind}]]></MsgType>"
            f"<MediaId><![CDATA[v1]]></MediaId><ThumbMediaId><![CDATA[t1]]></ThumbMediaId>"
            f"<MsgId>{wechat.new_msgid()}</MsgId></xml>"
        ).encode()
        assert deliver(wechat, body) == wechat.app.mpbot.config.text("video")
    assert not fake_llm.calls


# --- the pieces, without I/O ----------------------------------------------------------------------


def test_only_listed_hosts_are_fetched():
    hosts = ["mmbiz.qpic.cn", "127.0.0.1:8080"]
    assert host_allowed("http://mmbiz.qpic.cn/mmbiz_jpg/abc/0", hosts)
    assert host_allowed("https://MMBIZ.qpic.cn/x", hosts)
    assert host_allowed("http://127.0.0.1:8080/pic", hosts)
    for url in (
        "http://mmbiz.qpic.cn.evil.com/x",
        "http://evil.com/mmbiz.qpic.cn",
        "http://user:pw@mmbiz.qpic.cn/x",
        "http://mmbiz.qpic.cn:8443/x",
        "ftp://mmbiz.qpic.cn/x",
        "file:///etc/passwd",
        "http://127.0.0.1/pic",
        "http://127.0.0.1:8080@169.254.169.254/",
        "http://[::1]:8080/",
        "http://mmbiz.qpic.cn:99999/",
        "this is a url",
    ):
        assert not host_allowed(url, hosts), url


def test_lossless_pictures_have_a_lower_pixel_limit_and_mpo_photos_are_taken():
    with pytest.raises(MediaError) as failure:
        picture_data_url(photo(5000, 4000, fmt="PNG"), 1024)  # 20 MP would decode whole: 80 MB
    assert failure.value.kind == "picture_too_large"
    assert picture_data_url(photo(5000, 4000), 1024).startswith("data:image/jpeg"), "a JPEG decodes at 1/8"
    first, second = Image.new("RGB", (800, 600), "red"), Image.new("RGB", (800, 600), "blue")
    out = io.BytesIO()
    first.save(out, "MPO", save_all=True, append_images=[second])
    url = picture_data_url(out.getvalue(), 1024)
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        assert image.size == (800, 600) and image.getpixel((10, 10))[0] > 200, "the first picture"


def test_at_most_two_pictures_or_clips_are_decoded_at_once():
    import threading

    from mpbot.media import decode

    busy, most, lock = [0], [0], threading.Lock()

    def work(seconds):
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(seconds)
        with lock:
            busy[0] -= 1
        return seconds

    threads = [threading.Thread(target=decode, args=(work, 0.1)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2, "RQ's 250 job threads do not decode 250 pictures at once"


def test_pictures_are_scaled_down_and_kept_in_shape():
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "GIF"):
        url = picture_data_url(photo(2048, 512, fmt=fmt), 1024)
        with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
            assert image.format == "JPEG" and image.size == (1024, 256), fmt
    transparent = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    out = io.BytesIO()
    transparent.save(out, "PNG")
    with Image.open(io.BytesIO(base64.b64decode(picture_data_url(out.getvalue(), 1024).split(",", 1)[1]))) as image:
        assert image.getpixel((5, 5)) == (255, 255, 255), "transparency becomes white, not black"
    for data in (b"", b"GIF89a", b"%PDF-1.4 not a picture", os.urandom(5000)):
        with pytest.raises(MediaError) as failure:
            picture_data_url(data, 1024)
        assert failure.value.kind == "picture_unreadable"
    assert isinstance(failure.value, LLMError), "a job ends it like any failed answer"


def test_the_real_amr_file_converts_to_16khz_mono_wav():
    with open(VOICE, "rb") as f:
        data = f.read()
    assert data.startswith(b"#!AMR\n"), "AMR-NB, as WeChat keeps voice messages"
    with wave.open(io.BytesIO(to_wav(data))) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert 3.0 < wav.getnframes() / 16000 < 3.6
    for broken in (b"", b"#!AMR\n", b"RIFF", os.urandom(3000)):
        with pytest.raises(MediaError) as failure:
            to_wav(broken)
        assert failure.value.kind == "voice_unreadable"


def test_a_download_stops_at_its_size_cap_and_its_time():
    class Raw:
        def __init__(self, chunks, delay):
            self.chunks, self.delay = list(chunks), delay

        def read1(self, size):
            time.sleep(self.delay)
            return self.chunks.pop(0) if self.chunks else b""

    class Response:
        def __init__(self, chunks, length=None, delay=0.0):
            self.headers = {} if length is None else {"Content-Length": str(length)}
            self.raw = Raw(chunks, delay)

    far = time.monotonic() + 60
    assert read_capped(Response([b"ab", b"cd"]), 10, far, "picture") == b"abcd"
    for response, kind in (
        (Response([b"x"], length=11), "picture_too_large"),  # said so before sending a byte
        (Response([b"x" * 6, b"x" * 6]), "picture_too_large"),  # no length given, cut at the cap
        (Response([b"x"] * 100, delay=0.02), "picture_unavailable"),  # a byte at a time: cut at the time
    ):
        started = time.monotonic()
        with pytest.raises(MediaError) as failure:
            read_capped(response, 10 if kind == "picture_too_large" else 1000, time.monotonic() + 0.5, "picture")
        assert failure.value.kind == kind
        assert time.monotonic() - started < 1.0


def test_media_hosts_must_be_host_names():
    from mpbot.errors import ConfigError

    for hosts in (["http://mmbiz.qpic.cn"], ["mmbiz.qpic.cn/x"], "mmbiz.qpic.cn", [1]):
        with pytest.raises(ConfigError, match="MPBOT_MEDIA_HOSTS"):
            load_config({"WECHAT_TOKEN": "t0ken", "MPBOT_MEDIA_HOSTS": hosts})


# --- mpbot check ----------------------------------------------------------------------------------


def test_check_says_whether_the_model_takes_pictures_and_how_voice_is_heard(
    fake_llm, fake_llm_server, media_api_server
):
    from mpbot.doctor import check_pictures, check_voice

    base = {"WECHAT_TOKEN": "t0ken", "OPENAI_API_KEY": "sk-secret-key", "OPENAI_BASE_URL": fake_llm_server[1]}
    config = load_config({**base, "MPBOT_VISION_MODEL": "fake-vision"})
    status, item, line = check_pictures(config, model_ok=True)
    assert (status, item) == ("ok", "pictures") and "fake-vision" in line and "took a test picture" in line
    picture = sent_picture(fake_llm.calls[-1])
    assert picture.size == (64, 64), "a small picture: the check costs next to nothing"

    fake_llm.blind.add("fake-vision")
    status, _item, line = check_pictures(config, model_ok=True)
    assert status == "warn" and "refused a test picture" in line and "set MPBOT_VISION_MODEL" in line
    assert "sk-secret-key" not in line
    assert check_pictures(load_config({**base, "MPBOT_PICTURES": False}), True)[0] == "info"

    status, _item, line = check_voice(config)
    assert status == "info" and "set WECHAT_APPID and WECHAT_APPSECRET" in line
    with_secret = load_config({**base, **media_settings(media_api_server[1])})
    status, _item, line = check_voice(with_secret)
    assert status == "ok" and "whisper-1" in line and "transcribed a one-second test clip" in line, line
    assert fake_llm.transcriptions[-1]["seconds"] == 1.0
    fake_llm.stt_status = 404
    status, _item, line = check_voice(with_secret)
    assert status == "warn" and "MPBOT_STT_BASE_URL" in line
    assert (
        "transcription off"
        in check_voice(load_config({**base, **media_settings(media_api_server[1]), "MPBOT_STT_MODEL": ""}))[2]
    )


# --- as shipped -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_make_run_answers_a_picture_and_a_voice_message(
    tmp_path, fake_llm, fake_llm_server, media_api_server, media_api
):
    """`make run` as shipped (gunicorn's gevent worker, embedded mode): the picture is scaled and
    the voice decoded off the event loop, and both are answered within WeChat's window."""
    import json

    from test_run import start, stop

    settings = {
        **media_settings(media_api_server[1]),
        "OPENAI_BASE_URL": fake_llm_server[1],
        "WECHAT_TOKEN": "mediatoken",
    }
    env = {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in settings.items()}
    media_api.pictures["p1"] = photo(4000, 3000, orientation=6)
    with open(VOICE, "rb") as f:
        media_api.media["voice-media-1"] = (f.read(), "audio/amr")
    process, url = start(tmp_path, env)
    try:
        wechat = WeChat(url, "mediatoken")
        assert "对话已开始" in wechat.say("/chatgpt")
        started = time.monotonic()
        assert deliver(wechat, image_xml(wechat.new_msgid(), f"{media_api_server[1]}/pic/p1")).startswith("答：")
        assert time.monotonic() - started < 5, "answered on the first delivery"
        assert sent_picture(fake_llm.calls[-1]).size == (768, 1024)
        reply = deliver(wechat, voice_xml(wechat.new_msgid()))
        assert reply == "你说：今天天气怎么样\n\n答：今天天气怎么样"
    finally:
        output = stop(process)
    assert "Traceback" not in output and "Warning" not in output, output
