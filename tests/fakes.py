"""Test doubles at the network edge: a fake OpenAI-compatible server (chat, with pictures, and
speech to text), a WeChat that signs (and encrypts) its deliveries, a fake WeChat API (access_token,
customer-service messages, media) with a fake image CDN, and a threaded HTTP server for the WSGI
app."""

import base64
import email.parser
import gzip
import hashlib
import io
import json
import os
import random
import re
import socket
import struct
import threading
import time
import wave
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import requests
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _QuietHTTPHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass


def _listen(handler) -> ThreadingHTTPServer:
    """A threaded HTTP server for ``handler`` on a free port of 127.0.0.1, serving in the background."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- the fake LLM ---------------------------------------------------------------------------


@dataclass
class Rule:
    latency: float = 0.0  # before the first byte
    status: int = 200
    content: str | None = None  # None: "答：<question>"
    finish_reason: str = "stop"
    pieces: int = 1  # a streamed answer comes in this many pieces...
    piece_delay: float = 0.0  # ...this far apart
    break_after: int | None = None  # the connection drops after this many pieces
    failures: int | None = None  # only the first this many calls fail (status, break_after); None: all
    retry_after: float | None = None  # sent as Retry-After with a failing status
    stall: float = 0.0  # the stream begins (headers, the role), then nothing for this long
    stall_calls: int | None = None  # only the first this many calls wait (latency, stall); None: all

    def split(self, content: str) -> list[str]:
        size = -(-len(content) // self.pieces) if content else 1
        return [content[i : i + size] for i in range(0, len(content), size)] or [""]


def text_of(content) -> str:
    """A message's text: the content itself, or its text parts (a question with a picture)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content


def pictures_of(content) -> list[str]:
    """The image URLs in a message's content parts."""
    if not isinstance(content, list):
        return []
    return [part["image_url"]["url"] for part in content if part.get("type") == "image_url"]


@dataclass
class FakeLLM:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1. ``rules`` maps a question (the
    last user message's text) to how to answer it; ``calls`` records every request body. A model
    in ``blind`` refuses content with a picture as DeepSeek's chat models do (400).

    ``POST /v1/audio/transcriptions`` answers ``transcript`` (or ``stt_status`` with an error)
    after ``stt_latency`` seconds, for a WAV or another audio file; ``transcriptions`` records
    each request's fields and file."""

    rules: dict[str, Rule] = field(default_factory=dict)
    blind: set[str] = field(default_factory=set)
    transcript: str = "今天天气怎么样"
    stt_status: int = 200
    stt_latency: float = 0.0
    transcriptions: list[dict] = field(default_factory=list)
    default: Rule = field(default_factory=Rule)
    calls: list[dict] = field(default_factory=list)
    # [question, started, ended, answered] per call, in time.monotonic() seconds; ended is None
    # until then; answered is whether a whole answer was written back (not an error, not cut off).
    timeline: list[list] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.rules.clear()
            self.calls.clear()
            self.timeline.clear()
            self.default = Rule()
            self.blind.clear()
            self.transcript, self.stt_status, self.stt_latency = "今天天气怎么样", 200, 0.0
            self.transcriptions.clear()

    def span(self, question: str) -> tuple[float, float | None]:
        with self.lock:
            return next((entry[1], entry[2]) for entry in self.timeline if entry[0] == question)

    def calls_for(self, question: str) -> int:
        with self.lock:
            return sum(1 for call in self.calls if text_of(call["messages"][-1]["content"]) == question)

    def _transcribe(self, content_type: str, raw: bytes) -> tuple[int, dict]:
        message = email.parser.BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
        fields = {}
        for part in message.get_payload():
            name = part.get_param("name", header="content-disposition")
            fields[name] = part.get_payload(decode=True)
            if part.get_filename():
                fields["filename"] = part.get_filename()
                fields["file_type"] = part.get_content_type()
        audio = fields.get("file", b"")
        seconds = None
        if audio[:4] == b"RIFF":
            with wave.open(io.BytesIO(audio)) as wav:
                seconds = wav.getnframes() / wav.getframerate()
                fields["rate"], fields["channels"] = wav.getframerate(), wav.getnchannels()
        fields["seconds"] = seconds
        time.sleep(self.stt_latency)
        with self.lock:
            self.transcriptions.append(fields)
            if self.stt_status != 200:
                return self.stt_status, {"error": {"message": "fake failure", "type": "server_error"}}
            if not audio:
                return 400, {"error": {"message": "no file", "type": "invalid_request_error"}}
            return 200, {"text": self.transcript}

    def start(self) -> str:
        fake = self

        class Handler(_QuietHTTPHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path.endswith("/audio/transcriptions"):
                    self._send(*fake._transcribe(self.headers["Content-Type"], raw))
                    return
                body = json.loads(raw)
                question = text_of(body["messages"][-1]["content"])
                if body["model"] in fake.blind and pictures_of(body["messages"][-1]["content"]):
                    with fake.lock:
                        fake.calls.append(body)
                    # As some servers do, the error repeats the part it refused (the picture and all).
                    part = json.dumps(body["messages"][-1]["content"][-1])
                    error = f"Failed to deserialize the JSON body: unknown variant `image_url`, expected `text`: {part}"
                    self._send(400, {"error": {"message": error, "type": "invalid_request_error"}})
                    return
                with fake.lock:
                    index = sum(1 for call in fake.calls if text_of(call["messages"][-1]["content"]) == question)
                    fake.calls.append(body)
                    rule = fake.rules.get(question, fake.default)
                    if rule.failures is not None and index >= rule.failures:
                        rule = replace(rule, status=200, break_after=None)
                    if rule.stall_calls is not None and index >= rule.stall_calls:
                        rule = replace(rule, latency=0.0, stall=0.0)
                    entry = [question, time.monotonic(), None, False]
                    fake.timeline.append(entry)
                self.answered = False
                self.stalls = rule.stall
                try:
                    self._answer(body, rule, question)
                finally:
                    entry[2], entry[3] = time.monotonic(), self.answered

            def _answer(self, body, rule, question):
                time.sleep(rule.latency)
                if rule.status != 200:
                    payload = {"error": {"message": f"fake failure {rule.status}", "type": "server_error"}}
                    headers = {} if rule.retry_after is None else {"Retry-After": f"{rule.retry_after:g}"}
                    self._send(rule.status, payload, headers)
                    return
                content = f"答：{question}" if rule.content is None else rule.content
                if body.get("stream"):
                    self._stream(body, rule, content)
                    return
                self._send(
                    200,
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": rule.finish_reason,
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

            def _stream(self, body, rule, content):
                """Server-sent events as OpenAI streams them: role, content pieces, finish, [DONE]."""

                def chunk(delta, finish=None):
                    payload = {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    }
                    # ASCII, escapes and all, as servers send it (a lone surrogate is sent as \ud800).
                    return f"data: {json.dumps(payload)}\n\n".encode()

                def write(data):  # chunked, so that a connection cut short is an error, not an end
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()

                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    write(chunk({"role": "assistant", "content": ""}))
                    time.sleep(self.stalls)
                    for number, piece in enumerate(rule.split(content)):
                        if number:
                            time.sleep(rule.piece_delay)
                        if rule.break_after is not None and number >= rule.break_after:
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        write(chunk({"content": piece}))
                    write(chunk({}, rule.finish_reason))
                    write(b"data: [DONE]\n\n")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    self.answered = True
                except OSError:
                    pass  # the client gave up (a timeout test)
                self.close_connection = True

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data)
                    self.answered = status == 200
                except OSError:
                    pass  # the client gave up (a timeout test)
                self.close_connection = True

        self.server = _listen(Handler)
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"


# --- the fake WeChat API ----------------------------------------------------------------------


@dataclass
class FakeWeChatAPI:
    """WeChat's API on 127.0.0.1, as far as pushing goes: ``POST /cgi-bin/stable_token`` and
    ``POST /cgi-bin/message/custom/send``, with WeChat's rules: a token expires after
    ``expires_in``; asked for in its last 5 minutes, a new one is issued and the old one keeps
    working for those minutes; a call with an unknown token gets 40001, with an expired one 42001;
    a text over 2048 bytes gets 45002; ``\\uXXXX`` escapes in the body are shown literally, as
    WeChat shows them. ``refuse`` maps an openid (or "*") to the errcode its messages get;
    ``token_error`` is the errcode every token request gets; ``down`` drops every connection."""

    appid: str
    secret: str
    expires_in: int = 7200
    token_latency: float = 0.0
    refuse: dict[str, int] = field(default_factory=dict)
    token_error: int | None = None
    down: bool = False
    fetches: int = 0
    sends: int = 0  # custom/send calls, accepted or not
    messages: list[tuple[str, str, float]] = field(default_factory=list)  # (openid, text, time.time())
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expires at (time.monotonic())
    current: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    autoreply: dict | None = None  # what GET /cgi-bin/get_current_autoreply_info answers
    # GET /cgi-bin/media/get: media_id -> (the file, its Content-Type); an unknown id gets 40007.
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    media_gets: int = 0
    # The image CDN, on the same server: GET /pic/<name> -> the file (JPEG).
    pictures: dict[str, bytes] = field(default_factory=dict)
    picture_gets: int = 0
    drip: float = 0.0  # seconds between the bytes of a picture or medium: a server too slow to wait for
    gzip: bool = False  # compress files for a client that accepts gzip (as a CDN or a proxy may)
    redirects: int = 0  # GET /moved/<name>: a redirect to /pic/<name> on "localhost"

    def reset(self) -> None:
        with self.lock:
            self.autoreply = None
            self.media.clear()
            self.pictures.clear()
            self.media_gets = self.picture_gets = self.redirects = 0
            self.drip, self.gzip = 0.0, False
            self.expires_in, self.token_latency, self.token_error, self.down = 7200, 0.0, None, False
            self.refuse.clear()
            self.messages.clear()
            self.tokens.clear()
            self.fetches = self.sends = 0
            self.current = None

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (as after two hours)."""
        with self.lock:
            for token in self.tokens:
                self.tokens[token] = time.monotonic()

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working (as after a forced refresh elsewhere)."""
        with self.lock:
            self.tokens.clear()
            self.current = None

    def texts(self, openid: str) -> list[str]:
        with self.lock:
            return [text for to, text, _t in self.messages if to == openid]

    def wait_texts(self, openid: str, count: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.texts(openid)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.texts(openid)

    def _token(self, body: dict) -> dict:
        time.sleep(self.token_latency)
        with self.lock:
            self.fetches += 1
            if self.token_error is not None:
                return {"errcode": self.token_error, "errmsg": "refused by the fake"}
            if body.get("grant_type") != "client_credential" or body.get("appid") != self.appid:
                return {"errcode": 40013, "errmsg": "invalid appid"}
            if body.get("secret") != self.secret:
                return {"errcode": 40125, "errmsg": "invalid appsecret"}
            now = time.monotonic()
            left = self.tokens.get(self.current, now) - now
            if left <= 300:  # none yet, or in its last 5 minutes: a new one; the old one lasts them out
                self.current = f"fake-access-token-{len(self.tokens) + 1}-{os.urandom(6).hex()}"
                self.tokens[self.current] = now + self.expires_in
                left = self.expires_in
            return {"access_token": self.current, "expires_in": int(left)}

    def _send(self, token: str, raw: bytes) -> dict:
        with self.lock:
            self.sends += 1
            if token not in self.tokens:
                return {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}
            if self.tokens[token] <= time.monotonic():
                return {"errcode": 42001, "errmsg": "access_token expired"}
            # WeChat does not decode \uXXXX escapes: the subscriber would read them as they are.
            body = json.loads(raw.replace(b"\\u", b"\\\\u"))
            openid, text = body["touser"], body["text"]["content"]
            if body.get("msgtype") != "text":
                return {"errcode": 40008, "errmsg": "invalid message type"}
            if len(text.encode()) > 2048:
                return {"errcode": 45002, "errmsg": "content size out of limit"}
            code = self.refuse.get(openid, self.refuse.get("*"))
            if code is not None:
                return {"errcode": code, "errmsg": "refused by the fake"}
            self.messages.append((openid, text, time.time()))
            return {"errcode": 0, "errmsg": "ok"}

    def start(self) -> str:
        fake = self

        class Handler(_QuietHTTPHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if fake.down:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                path, _, query = self.path.partition("?")
                params = dict(pair.split("=", 1) for pair in query.split("&") if "=" in pair)
                if path == "/cgi-bin/stable_token":
                    payload = fake._token(json.loads(raw))
                elif path == "/cgi-bin/message/custom/send":
                    payload = fake._send(params.get("access_token", ""), raw)
                else:
                    payload = {"errcode": 404, "errmsg": "no such API in the fake"}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _file(self, data: bytes, content_type: str):
                self.send_response(200)
                if fake.gzip and "gzip" in self.headers.get("Accept-Encoding", ""):
                    data = gzip.compress(data)
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    if not fake.drip:
                        self.wfile.write(data)
                        return
                    for index in range(len(data)):
                        self.wfile.write(data[index : index + 1])
                        self.wfile.flush()
                        time.sleep(fake.drip)
                except OSError:
                    pass  # the client gave up
                self.close_connection = True

            def do_GET(self):
                path, _, query = self.path.partition("?")
                params = dict(pair.split("=", 1) for pair in query.split("&") if "=" in pair)
                if path.startswith("/moved/"):
                    with fake.lock:
                        fake.redirects += 1
                    port = self.server.server_address[1]
                    self.send_response(302)
                    self.send_header("Location", f"http://localhost:{port}/pic/{path[len('/moved/') :]}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path.startswith("/pic/"):
                    with fake.lock:
                        fake.picture_gets += 1
                        data = fake.pictures.get(path[len("/pic/") :])
                    if data is None:
                        self.send_error(404)
                    else:
                        self._file(data, "image/jpeg")
                    return
                if path == "/cgi-bin/media/get":
                    found = fake._media(params.get("access_token", ""), params.get("media_id", ""))
                    if isinstance(found, tuple):
                        self._file(*found)
                        return
                    payload = found
                elif path == "/cgi-bin/get_current_autoreply_info":
                    payload = fake._autoreply(params.get("access_token", ""))
                else:
                    payload = {"errcode": 404, "errmsg": "no such API in the fake"}
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = _listen(Handler)
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _media(self, token: str, media_id: str) -> tuple[bytes, str] | dict:
        with self.lock:
            self.media_gets += 1
            if token not in self.tokens:
                return {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}
            if self.tokens[token] <= time.monotonic():
                return {"errcode": 42001, "errmsg": "access_token expired"}
            if media_id not in self.media:
                return {"errcode": 40007, "errmsg": "invalid media_id"}
            return self.media[media_id]

    def _autoreply(self, token: str) -> dict:
        with self.lock:
            if token not in self.tokens:
                return {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}
            return self.autoreply if self.autoreply is not None else {"errcode": 48001, "errmsg": "api unauthorized"}


# --- the app over real HTTP -----------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # WeChat (the test) dropped a delivery: writing the late reply fails, as it should


def serve(app) -> tuple[str, object]:
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


# --- WeChat ---------------------------------------------------------------------------------


def sha1_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def aes_encrypt(encoding_aes_key: str, appid: str, plaintext: bytes, prefix: bytes | None = None) -> str:
    """WeChat's safe-mode envelope, written from the spec (not from the code under test)."""
    key = base64.b64decode(encoding_aes_key + "=")
    data = (prefix or os.urandom(16)) + struct.pack(">I", len(plaintext)) + plaintext + appid.encode()
    pad = 32 - len(data) % 32
    data += bytes([pad]) * pad
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode()


def aes_decrypt(encoding_aes_key: str, encrypted: str) -> tuple[bytes, str]:
    key = base64.b64decode(encoding_aes_key + "=")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    data = decryptor.update(base64.b64decode(encrypted)) + decryptor.finalize()
    data = data[: -data[-1]]
    length = struct.unpack(">I", data[16:20])[0]
    return data[20 : 20 + length], data[20 + length :].decode()


def text_xml(content: str, msgid: int, openid: str = "user-1", to: str = "gh_account") -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msgid}</MsgId></xml>"
    ).encode()


@dataclass
class Delivery:
    number: int  # 1, 2 or 3
    status: int | None  # None: WeChat dropped it
    body: str
    seconds: float


class WeChat:
    """Plays WeChat against a bot: signs every request, encrypts in safe mode, and delivers a
    message up to three times with the same MsgId, dropping each after ``timeout`` seconds."""

    _ids = iter(range(int(time.time() * 1000) * 1000, 2**63))

    def __init__(self, url: str, token: str, aes_key: str = "", appid: str = "", timeout: float = 5.0):
        self.verify = True  # False: through a proxy with the test's own certificate
        self.url = url
        self.token = token
        self.aes_key = aes_key
        self.appid = appid
        self.timeout = timeout

    @classmethod
    def new_msgid(cls) -> int:
        return next(cls._ids)

    def signed_query(self, timestamp: str | None = None, nonce: str | None = None) -> dict:
        """A signed query as WeChat makes it: the time now, and a new random nonce each time."""
        timestamp = timestamp or str(int(time.time()))
        nonce = nonce or str(random.randrange(10**9, 10**10))
        return {"timestamp": timestamp, "nonce": nonce, "signature": sha1_signature(self.token, timestamp, nonce)}

    def post(self, body: bytes, *, timeout: float | None = None, safe: bool = False, query: dict | None = None):
        params = self.signed_query() if query is None else dict(query)
        if safe:
            encrypted = aes_encrypt(self.aes_key, self.appid, body)
            params.update(
                encrypt_type="aes",
                msg_signature=sha1_signature(self.token, params["timestamp"], params["nonce"], encrypted),
            )
            body = (
                f"<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>".encode()
            )
        return requests.post(
            f"{self.url}/wechat",
            params=params,
            data=body,
            timeout=timeout or self.timeout,
            headers={"Content-Type": "text/xml"},
            verify=self.verify,
        )

    def deliver(self, body: bytes, *, deliveries: int = 3, safe: bool = False) -> list[Delivery]:
        """Deliver like WeChat: again after each dropped delivery, at most ``deliveries`` times."""
        log = []
        for number in range(1, deliveries + 1):
            started = time.monotonic()
            try:
                response = self.post(body, safe=safe)
            except requests.exceptions.ReadTimeout:
                log.append(Delivery(number, None, "", time.monotonic() - started))
                continue
            log.append(Delivery(number, response.status_code, response.text, time.monotonic() - started))
            break
        return log

    def reply_text(self, body: str, safe: bool = False) -> str:
        """The text a subscriber sees for a response body ('' for no reply)."""
        if not body:
            return ""
        root = ET.fromstring(body)
        if safe:
            inner, appid = aes_decrypt(self.aes_key, root.findtext("Encrypt"))
            assert appid == self.appid
            root = ET.fromstring(inner)
        assert root.findtext("MsgType") == "text", body
        return root.findtext("Content")

    def say(self, content: str, openid: str = "user-1", safe: bool = False) -> str:
        """Send one text message as WeChat would; the text the subscriber ends up seeing."""
        log = self.deliver(text_xml(content, self.new_msgid(), openid), safe=safe)
        assert log[-1].status == 200, log
        return self.reply_text(log[-1].body, safe=safe)


# --- reading replies ----------------------------------------------------------------------------


def link_in(reply: str) -> str:
    """The first page link in a reply (not a tap that sends a message)."""
    match = re.search(r'href="(https?://[^"]+)"', reply)
    assert match, f"no link in {reply!r}"
    return match.group(1)


def body_of(reply: str) -> str:
    """A part of an answer without its label and link, and without the question it names first
    when a later message (or a push) shows it."""
    return re.sub(r"^关于「[^」]*」：\n\n", "", reply.rsplit("\n\n（", 1)[0])
