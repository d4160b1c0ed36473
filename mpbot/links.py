"""Signed, expiring links: ``{PUBLIC_URL}/answer/{token}`` (one answer, by MsgId) and
``{PUBLIC_URL}/history/{token}`` (one session's questions and answers, by session id).

The token is ``value.expiry`` and an HMAC-SHA256 of it and the link's kind under ``SECRET_KEY``
(128 bits kept), all URL-safe base64. Nobody without the key can make one, change one, extend one
or turn one kind into the other.
"""

import base64
import hashlib
import hmac
import time


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Links:
    def __init__(self, config) -> None:
        self.key = config.SECRET_KEY.encode()
        self.base = config.PUBLIC_URL
        self.ttl = int(config.MPBOT_LINK_TTL)

    def _mac(self, kind: str, payload: bytes) -> bytes:
        return hmac.new(self.key, kind.encode() + b":" + payload, hashlib.sha256).digest()[:16]

    def token(self, value: str, kind: str = "answer", now: float | None = None) -> str:
        payload = f"{value}.{int(now or time.time()) + self.ttl}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(kind, payload))}"

    def url(self, msgid: str, now: float | None = None) -> str:
        return f"{self.base}/answer/{self.token(msgid, now=now)}"

    def history_url(self, sid: str) -> str:
        return f"{self.base}/history/{self.token(sid, 'history')}"

    def verify(self, token: str, kind: str = "answer", now: float | None = None) -> str | None:
        """The value (MsgId, session id) a token of ``kind`` links to, or None when it is forged,
        altered, of the other kind or expired."""
        try:
            payload_b64, mac_b64 = token.split(".")
            payload, mac = _unb64(payload_b64), _unb64(mac_b64)
            value, expiry = payload.decode().rsplit(".", 1)
            expires = int(expiry)
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(mac, self._mac(kind, payload)):
            return None
        if expires < (now or time.time()):
            return None
        return value
