"""Test doubles at the network edge: a fake OpenAI-compatible server, a WeChat that signs (and
encrypts) its deliveries, and a threaded HTTP server for the WSGI app."""

import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time
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

    def split(self, content: str) -> list[str]:
        size = -(-len(content) // self.pieces) if content else 1
        return [content[i : i + size] for i in range(0, len(content), size)] or [""]


@dataclass
class FakeLLM:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1. ``rules`` maps a question (the
    last user message) to how to answer it; ``calls`` records every request body."""

    rules: dict[str, Rule] = field(default_factory=dict)
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

    def span(self, question: str) -> tuple[float, float | None]:
        with self.lock:
            return next((entry[1], entry[2]) for entry in self.timeline if entry[0] == question)

    def calls_for(self, question: str) -> int:
        with self.lock:
            return sum(1 for call in self.calls if call["messages"][-1]["content"] == question)

    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = body["messages"][-1]["content"]
                with fake.lock:
                    index = sum(1 for call in fake.calls if call["messages"][-1]["content"] == question)
                    fake.calls.append(body)
                    rule = fake.rules.get(question, fake.default)
                    if rule.failures is not None and index >= rule.failures:
                        rule = replace(rule, status=200, break_after=None)
                    entry = [question, time.monotonic(), None, False]
                    fake.timeline.append(entry)
                self.answered = False
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
                    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

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

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.server = server
        return f"http://127.0.0.1:{server.server_address[1]}/v1"


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
        self.url = url
        self.token = token
        self.aes_key = aes_key
        self.appid = appid
        self.timeout = timeout

    @classmethod
    def new_msgid(cls) -> int:
        return next(cls._ids)

    def signed_query(self, timestamp: str | None = None, nonce: str = "nonce123") -> dict:
        timestamp = timestamp or str(int(time.time()))
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
