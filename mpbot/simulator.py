"""WeChat, played against any running bot (``python -m mpbot chat``).

It does what WeChat's servers do with a subscriber's text message: sign the request (and, with an
EncodingAESKey, encrypt it as safe mode does), deliver it, drop the delivery after 5 s, deliver it
again with the same MsgId, three times in all; and judge the reply as WeChat would: an empty body
or ``success`` shows nothing, a reply that is not valid XML (or whose signature does not hold), a
non-200 status or three timeouts show the subscriber WeChat's error text.
"""

import hashlib
import itertools
import re
import secrets
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from werobot.crypto import PrpCrypto

from .config import aes_key

WECHAT_ERROR = "该公众号提供的服务出现故障，请稍后再试"
_LINK = re.compile(r'<a href="([^"]*)">(.*?)</a>', re.S)
_DTD = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.I)


def _sha1(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # noqa: S324 (WeChat's scheme)


def as_seen(text: str) -> str:
    """A reply as a terminal can show it: links as ``label (URL)``, and a tap that sends a
    message (``weixin://bizmsgmenu``) as its label: in a terminal, type it."""

    def shown(m: re.Match) -> str:
        url, label = m.group(1), m.group(2)
        return label if url.startswith("weixin://bizmsgmenu") else f"{label} ({url})"

    return _LINK.sub(shown, text)


def _xml(text: str) -> ET.Element:
    # Refused before parsing, as the webhook does: no DTD, so no entity can expand.
    if _DTD.search(text):
        raise ValueError("the reply carries a DTD")
    return ET.fromstring(text)  # noqa: S314 (no DTD, checked above)


def http_only(url: str) -> str:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url


class Unreachable(Exception):
    """The bot could not be reached at all (no server at the URL)."""


@dataclass
class Delivery:
    number: int
    outcome: str  # answered, silent, no_reply, error
    seconds: float
    detail: str = ""


@dataclass
class Result:
    deliveries: list[Delivery] = field(default_factory=list)
    reply: str | None = None  # what the subscriber reads; None: nothing
    wechat_error: bool = False
    seconds: float = 0.0


class Simulator:
    _ids = itertools.count(int(time.time() * 1000) * 1000)

    def __init__(
        self,
        url: str,
        token: str,
        aes_key_text: str = "",
        appid: str = "",
        user: str = "mpbot-chat",
        timeout: float = 5.0,
        deliveries: int = 3,
    ) -> None:
        self.url = http_only(url)
        self.token = token
        self.crypto = PrpCrypto(aes_key(aes_key_text)) if aes_key_text else None
        self.appid = appid
        self.user = user
        self.timeout = timeout
        self.deliveries = deliveries

    def message(self, text: str, msgid: int) -> bytes:
        escaped = text.replace("]]>", "]]]]><![CDATA[>")
        return (
            f"<xml><ToUserName><![CDATA[gh_mpbot_chat]]></ToUserName>"
            f"<FromUserName><![CDATA[{self.user}]]></FromUserName><CreateTime>{int(time.time())}</CreateTime>"
            f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{escaped}]]></Content>"
            f"<MsgId>{msgid}</MsgId></xml>"
        ).encode()

    def _request(self, body: bytes) -> tuple[bytes, dict]:
        timestamp, nonce = str(int(time.time())), secrets.token_hex(5)
        query = {"timestamp": timestamp, "nonce": nonce, "signature": _sha1(self.token, timestamp, nonce)}
        if self.crypto is not None:
            encrypted = self.crypto.encrypt(body.decode(), self.appid).decode()
            query.update(encrypt_type="aes", msg_signature=_sha1(self.token, timestamp, nonce, encrypted))
            body = (
                "<xml><ToUserName><![CDATA[gh_mpbot_chat]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
            ).encode()
        return body, query

    def _reply(self, body: str) -> str:
        """The text a subscriber reads from a reply body; ValueError when WeChat would refuse it."""
        try:
            root = _xml(body)
            if self.crypto is not None:
                encrypted = root.findtext("Encrypt") or ""
                signature = _sha1(self.token, root.findtext("TimeStamp") or "", root.findtext("Nonce") or "", encrypted)
                if signature != root.findtext("MsgSignature"):
                    raise ValueError("the reply's MsgSignature does not hold")
                try:
                    inner = self.crypto.decrypt(encrypted, self.appid)
                except Exception as exc:  # WeRoBot's own errors: bad padding, another AppID
                    raise ValueError(f"the reply cannot be decrypted ({exc.__class__.__name__})") from None
                root = _xml(inner.decode("utf-8", "replace"))
        except ET.ParseError as exc:
            raise ValueError(f"the reply is not valid XML ({exc})") from None
        kind = root.findtext("MsgType")
        if kind != "text":
            return f"[a {kind} reply]"
        return root.findtext("Content") or ""

    def send(self, text: str, on_delivery=None) -> Result:
        """Send one text message as WeChat does; ``on_delivery(number)`` is called as each
        delivery goes out. Raises ``Unreachable`` when nothing listens at the URL."""
        msgid = next(self._ids)
        result = Result()
        started = time.monotonic()
        for number in range(1, self.deliveries + 1):
            if on_delivery:
                on_delivery(number)
            body, query = self._request(self.message(text, msgid))
            request = urllib.request.Request(  # noqa: S310 (http_only checked the scheme)
                f"{self.url}?{urllib.parse.urlencode(query)}", data=body, headers={"Content-Type": "text/xml"}
            )
            sent = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (as above)
                    status, reply = response.status, response.read().decode("utf-8", "replace")
            except urllib.error.HTTPError as exc:
                status, reply = exc.code, ""
            except TimeoutError:
                result.deliveries.append(Delivery(number, "silent", time.monotonic() - sent, "no reply in time"))
                continue
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                    result.deliveries.append(Delivery(number, "silent", time.monotonic() - sent, "no reply in time"))
                    continue
                raise Unreachable(f"cannot reach {self.url}: {exc.reason}") from None
            seconds = time.monotonic() - sent
            if status != 200:
                result.deliveries.append(Delivery(number, "error", seconds, f"HTTP {status}"))
                result.wechat_error = True
            elif reply.strip() in ("", "success"):
                result.deliveries.append(Delivery(number, "no_reply", seconds, "empty reply: WeChat shows nothing"))
            else:
                try:
                    result.reply = self._reply(reply)
                    result.deliveries.append(Delivery(number, "answered", seconds))
                except ValueError as exc:
                    result.deliveries.append(Delivery(number, "error", seconds, str(exc)))
                    result.wechat_error = True
            break
        else:
            result.wechat_error = True  # three timeouts
        if result.wechat_error:
            result.reply = WECHAT_ERROR
        result.seconds = time.monotonic() - started
        return result
