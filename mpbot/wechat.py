"""WeChat's side of the wire: signatures, safe-mode crypto, XML in, reply XML out.

Everything that comes from the request is checked here and refused with ``BadRequest`` (4xx)
before a handler sees it; WeRoBot does the parsing into message objects and the reply templates.
"""

import hmac
import logging
import re
import time
from dataclasses import dataclass

import werobot.replies
from werobot.crypto import MessageCrypt
from werobot.messages.events import UnknownEvent
from werobot.messages.messages import UnknownMessage
from werobot.parser import parse_xml, process_message
from werobot.utils import get_signature

from .errors import BadRequest, Forbidden
from .formatting import xml_safe
from .guard import digest, well_formed

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
# The message types a subscriber sends, each with a MsgId (``file`` comes from the desktop
# client). Other types, and every event, are WeChat telling the account something: no MsgId.
MESSAGE_TYPES = ("text", "image", "voice", "video", "shortvideo", "location", "link", "file")
# WeChat never sends a DTD; refusing one before parsing rules out entity expansion and XXE.
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.I)
_NUMBER = re.compile(r"^[0-9]{1,20}$")
_REQUIRED = ("ToUserName", "FromUserName", "CreateTime", "MsgType")
_CASED = (*_REQUIRED, "Event", "EventKey")


def signature_ok(token: str, timestamp: str, nonce: str, signature: str, *extra: str) -> bool:
    """Constant-time check of WeChat's sha1 signature over the sorted token, timestamp, nonce
    (and, for ``msg_signature``, the Encrypt field)."""
    if not (timestamp and nonce and signature):
        return False
    expected = get_signature(token, timestamp, nonce, *extra)
    return hmac.compare_digest(expected.encode(), signature.encode())


class Crypto:
    """Safe and compatible mode: the current EncodingAESKey, and the previous one as a fallback
    (WeChat's FAQ: keep the old key and try it when decryption fails)."""

    def __init__(self, token: str, appid: str, keys: list[str]) -> None:
        self.token = token
        self.appid = appid
        self.crypts = [MessageCrypt(token, key, appid) for key in keys if key]

    def decrypt(self, encrypted: str, timestamp: str, nonce: str, msg_signature: str) -> tuple[bytes, MessageCrypt]:
        if not signature_ok(self.token, timestamp, nonce, msg_signature, encrypted):
            raise Forbidden("msg_signature does not match")
        for crypt in self.crypts:
            try:
                xml = crypt.prp_crypto.decrypt(encrypted, self.appid)
            except Exception:  # noqa: S112 (bad base64, bad padding, wrong key or appid: try the next key)
                continue
            if xml:
                return bytes(xml), crypt
        raise BadRequest("cannot decrypt the message with WECHAT_ENCODING_AES_KEY and WECHAT_APPID")


def _parse(body: bytes) -> dict:
    if _DTD.search(body):
        raise BadRequest("XML with a DTD or entities")
    try:
        fields = parse_xml(body)
    except Exception as exc:  # expat errors, a root that is not <xml>, text instead of elements
        raise BadRequest(f"malformed XML: {exc.__class__.__name__}") from None
    if not isinstance(fields, dict):
        raise BadRequest("malformed XML: <xml> has no fields")
    return fields


@dataclass
class Incoming:
    message: object | None  # a werobot.messages message or event; None: nothing to answer
    crypt: MessageCrypt | None  # set when the reply must be encrypted
    digest: str  # of the message's fields (decrypted): the same for each delivery of one message


PLAINTEXT_REFUSED = (
    "plaintext message refused: WECHAT_ENCODING_AES_KEY is set, so only safe-mode and compatible-mode "
    "messages are taken (in plaintext nothing signs the message itself). Set the console's "
    "消息加解密方式 (设置与开发 > 基本配置 > 服务器配置) to 安全模式 or 兼容模式, or unset WECHAT_ENCODING_AES_KEY"
)


def parse_request(body: bytes, query, crypto: Crypto | None) -> Incoming:
    """A POST body (and its query string) as a WeRoBot message; BadRequest when it is not one.

    With an EncodingAESKey set, only the encrypted message counts: a body without ``<Encrypt>``
    is refused (403), and in compatible mode the plaintext fields beside it are ignored.
    """
    fields = _parse(body)
    crypt = None
    encrypted = fields.get("Encrypt")
    if query.get("encrypt_type", "") == "aes" or (crypto is not None and encrypted is not None):
        if crypto is None:
            raise BadRequest("safe-mode message, but WECHAT_ENCODING_AES_KEY is not set")
        if not isinstance(encrypted, str):
            raise BadRequest("safe-mode message without <Encrypt>")
        xml, crypt = crypto.decrypt(
            encrypted, query.get("timestamp", ""), query.get("nonce", ""), _msg_signature(query)
        )
        fields = _parse(xml)
    elif crypto is not None:
        raise Forbidden(PLAINTEXT_REFUSED, reason="plaintext")
    for name in _CASED:  # <toUserName> in some captures: read as WeChat's own <ToUserName>
        lower = name[0].lower() + name[1:]
        if lower in fields:
            fields.setdefault(name, fields[lower])
    missing = [name for name in _REQUIRED if not isinstance(fields.get(name), str) or not fields[name]]
    if missing:
        # Signed, but not a message this bot can read or answer: WeChat gets "success" (a 4xx
        # would show the subscriber WeChat's error), the admin one log line.
        log.warning("a signed message without %s: answered success", ", ".join(missing))
        return Incoming(None, crypt, digest(fields))
    if not _NUMBER.match(fields["CreateTime"]):
        raise BadRequest("malformed field CreateTime")
    if not well_formed("openid", fields["FromUserName"]):
        raise BadRequest("malformed field FromUserName")
    kind = fields["MsgType"].lower()
    if kind in MESSAGE_TYPES and (not isinstance(fields.get("MsgId"), str) or not _NUMBER.match(fields["MsgId"])):
        raise BadRequest("missing or malformed field MsgId")
    if kind == "text" and not isinstance(fields.get("Content"), str):
        fields["Content"] = ""  # <Content/>: an empty text, as WeChat would never send but must not break on
    return Incoming(read_message(fields), crypt, digest(fields))


def read_message(fields: dict):
    """WeRoBot's message or event object for ``fields``. What WeRoBot's parser cannot read (a
    ``pic_*`` event whose SendPicsInfo Count does not match its items, or with an empty PicList;
    an Event that is not text) is kept as an unknown message or event of the same ``type``, and
    logged: WeChat signed it, so it gets a 200 like any message the bot has no answer for."""
    try:
        return process_message(dict(fields))
    except Exception as exc:
        kind = str(fields.get("MsgType", "")).lower()
        event = fields.get("Event") if kind == "event" else None
        name = f"{event if isinstance(event, str) else 'unknown'}".lower() + "_event" if kind == "event" else kind
        log.warning(
            "WeRoBot cannot read a %s message (%s: %s): taken as one with no reply", name, exc.__class__.__name__, exc
        )
        plain = {key: value for key, value in fields.items() if key not in ("MsgType", "Event")}
        return (UnknownEvent if kind == "event" else UnknownMessage)({**plain, "type": name, "logged": True})


def _msg_signature(query) -> str:
    value = query.get("msg_signature", "")
    if not well_formed("msg_signature", value):
        raise BadRequest("safe-mode message without a well-formed msg_signature")
    return value


def cdata(text: str) -> str:
    """Text that is safe inside ``<![CDATA[...]]>``: a ``]]>`` in it would end the section."""
    return text.replace("]]>", "]]]]><![CDATA[>")


def text_reply(message, content: str) -> werobot.replies.TextReply:
    """A text reply to ``message``; ``content`` may hold anything (model text included): what XML
    cannot carry is left out and ``]]>`` is split."""
    content = xml_safe(content)
    return werobot.replies.TextReply(
        source=cdata(message.target), target=cdata(message.source), content=cdata(content), time=int(time.time())
    )


# A reply that says "handled, nothing to say": WeChat shows nothing and stops retrying. WeChat's
# docs name this word (or an empty body); it is sent as it is, in safe mode too.
SUCCESS = "success"


def render(incoming: Incoming, reply) -> str:
    """The response body: reply XML, encrypted when the request was; ``success`` for SUCCESS,
    ``""`` for None (a delivery WeChat has given up on)."""
    if reply is SUCCESS or incoming.message is None:
        return SUCCESS
    if reply is None:
        return ""
    xml = reply.render()
    if incoming.crypt is not None:
        return incoming.crypt.encrypt_message(xml)
    return xml
