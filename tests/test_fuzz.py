"""Random and hostile input at /wechat and at the page links (hypothesis): every answer is a 2xx
or 4xx in under a second, nothing crashes, and the app stays healthy. Every value a request
carries is fuzzed: the body and its fields (openid included), timestamp, nonce, signature,
echostr, the page token, the poll cursor, and the forwarding headers."""

import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FAST, SHARED, TOKEN
from fakes import aes_encrypt, serve, sha1_signature
from mpbot.web import create_app

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx0123456789abcdef"
FIELDS = ["ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId", "Event", "Recognition", "Encrypt"]
FUZZ = settings(
    max_examples=120,
    deadline=None,  # timed below, against the product's own bound
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def app_url(fake_llm_server):
    app = create_app(
        {
            **SHARED,
            **FAST,
            "OPENAI_BASE_URL": fake_llm_server[1],
            "WECHAT_ENCODING_AES_KEY": AES_KEY,
            "WECHAT_APPID": APPID,
            "MPBOT_PAGE_POLL": 0.3,  # a well-formed cursor past the end waits this long for news
        }
    )
    url, server = serve(app)
    APPS["app"] = app
    yield url
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200, "the app is still healthy after it all"
    server.shutdown()
    server.server_close()
    app.mpbot.close()


APPS: dict = {}  # the app under test, for tests that make real links with its key
texts = st.text(max_size=300)
# What a client can put in a header (http.client sends Latin-1; no CR, LF or leading space).
header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=200
)
hostile = st.sampled_from(
    [
        "]]>",
        "<![CDATA[",
        "\x00",
        "\ud7ff",
        "&amp;",
        "&lol;",
        '<!DOCTYPE x [<!ENTITY a "aaaa">]>',
        '<!ENTITY % p SYSTEM "http://127.0.0.1/">',
        "<?xml version='1.0' encoding='gbk'?>",
        "9" * 40,
        "-1",
        "/chatgpt",
    ]
)
values = st.one_of(texts, hostile, st.integers().map(str))
fields = st.dictionaries(st.sampled_from(FIELDS), values, max_size=8)


def xml_of(data: dict) -> str:
    return "<xml>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in data.items()) + "</xml>"


bodies = st.one_of(
    st.binary(max_size=2000),
    texts.map(str.encode),
    fields.map(xml_of).map(lambda x: x.encode("utf-8", "surrogatepass")),
    st.tuples(hostile, fields.map(xml_of)).map(lambda p: (p[0] + p[1]).encode("utf-8", "surrogatepass")),
    st.integers(min_value=60_000, max_value=200_000).map(lambda n: b"<xml>" + b"A" * n + b"</xml>"),
    st.integers(min_value=1, max_value=8).map(
        lambda depth: (
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + "".join(f'<!ENTITY lol{i} "{"&lol;" * 10}">' for i in range(depth))
            + "]><xml><Content>&lol7;</Content></xml>"
        ).encode()
    ),
)


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def check(response, seconds):
    assert response.status_code < 500, (response.status_code, response.text[:200])
    assert 200 <= response.status_code < 300 or 400 <= response.status_code < 500
    assert seconds < 1.0, f"{seconds:.2f} s"


@FUZZ
@given(
    body=bodies, signed=st.booleans(), encrypted=st.booleans(), query_noise=st.dictionaries(texts, texts, max_size=3)
)
def test_any_body_gets_a_fast_2xx_or_4xx(app_url, body, signed, encrypted, query_noise):
    timestamp, nonce = str(int(time.time())), "n0nce"
    query = {**query_noise, "timestamp": timestamp, "nonce": nonce}
    query["signature"] = sha1_signature(TOKEN, timestamp, nonce) if signed else "f" * 40
    if encrypted:
        encrypted_body = aes_encrypt(AES_KEY, APPID, body)
        query.update(encrypt_type="aes", msg_signature=sha1_signature(TOKEN, timestamp, nonce, encrypted_body))
        body = f"<xml><Encrypt><![CDATA[{encrypted_body}]]></Encrypt></xml>".encode()
    response, seconds = timed(lambda: requests.post(f"{app_url}/wechat", params=query, data=body, timeout=5))
    check(response, seconds)
    if not signed:
        assert response.status_code == 403


@FUZZ
@given(signature=texts, timestamp=texts, nonce=texts, echostr=texts, method=st.sampled_from(["GET", "POST", "PUT"]))
def test_any_query_gets_a_fast_2xx_or_4xx(app_url, signature, timestamp, nonce, echostr, method):
    params = {"signature": signature, "timestamp": timestamp, "nonce": nonce, "echostr": echostr}
    response, seconds = timed(lambda: requests.request(method, f"{app_url}/wechat", params=params, timeout=5))
    check(response, seconds)


@FUZZ
@given(token=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200), cursor=texts)
def test_any_page_token_or_cursor_gets_a_fast_404_or_400(app_url, token, cursor):
    token = requests.utils.quote(token, safe="")
    for path in (f"/answer/{token}", f"/answer/{token}/poll", f"/history/{token}"):
        response, seconds = timed(lambda p=path: requests.get(f"{app_url}{p}", params={"after": cursor}, timeout=5))
        check(response, seconds)
        assert response.status_code in (400, 404, 405), (path, response.status_code)


cursors = st.one_of(texts, st.from_regex(r"\A[0-9]{1,22}(-[0-9]{1,22})?\Z"), hostile)


@FUZZ
@given(cursor=cursors, forwarded=st.one_of(header_values, st.lists(st.ip_addresses().map(str)).map(", ".join)))
def test_any_cursor_on_a_real_link_gets_a_fast_200_or_400(app_url, cursor, forwarded):
    token = APPS["app"].mpbot.links.token("1234567890")
    headers = {"X-Forwarded-For": forwarded.strip()}
    response, seconds = timed(
        lambda: requests.get(f"{app_url}/answer/{token}/poll", params={"after": cursor}, headers=headers, timeout=5)
    )
    check(response, seconds)
    assert response.status_code in (200, 400), (cursor, response.status_code)


@FUZZ
@given(
    timestamp=st.one_of(texts, st.integers(-(10**12), 10**12).map(str)),
    nonce=st.one_of(texts, st.from_regex(r"\A[A-Za-z0-9]{1,80}\Z")),
    echostr=texts,
    method=st.sampled_from(["GET", "POST"]),
)
def test_any_signed_query_gets_a_fast_2xx_or_4xx(app_url, timestamp, nonce, echostr, method):
    """Signed with the right token, so that every value gets past the signature to its own check."""
    params = {"timestamp": timestamp, "nonce": nonce, "echostr": echostr}
    params["signature"] = sha1_signature(TOKEN, timestamp, nonce)
    response, seconds = timed(lambda: requests.request(method, f"{app_url}/wechat", params=params, timeout=5))
    check(response, seconds)


@FUZZ
@given(
    forwarded=header_values,
    real_ip=header_values,
    path=st.sampled_from(["/healthz", "/metrics", "/wechat", "/answer/x.y"]),
)
def test_any_forwarding_header_gets_a_fast_answer(app_url, forwarded, real_ip, path):
    headers = {"X-Forwarded-For": forwarded.strip(), "X-Real-IP": real_ip.strip()}
    response, seconds = timed(lambda: requests.get(f"{app_url}{path}", headers=headers, timeout=5))
    check(response, seconds)
