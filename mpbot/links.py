"""Signed, expiring links to the answer page: ``{PUBLIC_URL}/answer/{token}``.

The token is ``msgid.expiry`` and an HMAC-SHA256 of it under ``SECRET_KEY`` (128 bits kept), all
URL-safe base64. Nobody without the key can make one, change one or extend one.
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

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, b"answer:" + payload, hashlib.sha256).digest()[:16]

    def token(self, msgid: str, now: float | None = None) -> str:
        payload = f"{msgid}.{int(now or time.time()) + self.ttl}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def url(self, msgid: str) -> str:
        return f"{self.base}/answer/{self.token(msgid)}"

    def verify(self, token: str, now: float | None = None) -> str | None:
        """The MsgId a token links to, or None when it is forged, altered or expired."""
        try:
            payload_b64, mac_b64 = token.split(".")
            payload, mac = _unb64(payload_b64), _unb64(mac_b64)
            msgid, expiry = payload.decode().rsplit(".", 1)
            expires = int(expiry)
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        if expires < (now or time.time()):
            return None
        return msgid
