"""What a request must be before anything acts on it.

- ``SHAPES``, ``well_formed``, ``require``: every value taken from a request has one strict shape
  (ASCII digits, hex, URL-safe base64, printable ASCII), checked before it is used; what does
  not fit is a 400.
- ``Replays``: in plaintext mode WeChat's ``signature`` covers the token, timestamp and nonce, not
  the body. Each signature is remembered with a digest of the message it came with, for as long
  as its timestamp is fresh, so that one leaked signed URL cannot carry another message; WeChat's
  own retries (the same message) pass.
- ``Proxies``: ``X-Forwarded-For`` is believed only from the proxies named in
  ``MPBOT_FORWARDED_ALLOW_IPS``.
- ``Polls``: the answer page's long-polls a web process holds at once, per link, per client and in
  all, so that a few clients cannot hold every thread.
"""

import contextlib
import hashlib
import ipaddress
import json
import re
import threading
from collections import Counter

from .errors import BadRequest

# [0-9] and the like match ASCII only (str.isdigit() also takes "²" and "٣").
SHAPES = {
    "timestamp": re.compile(r"[0-9]{1,10}"),
    "nonce": re.compile(r"[!-~]{1,128}"),  # WeChat's are digits; any printable ASCII is taken
    "signature": re.compile(r"[0-9a-fA-F]{40}"),
    "msg_signature": re.compile(r"[0-9a-fA-F]{40}"),
    "echostr": re.compile(r"[A-Za-z0-9_.=+/-]{1,256}"),
    # Real openids are 28 URL-safe characters; samples and captures use "fromUser" and the like.
    "openid": re.compile(r"[!-~]{1,128}"),
    "link": re.compile(r"[A-Za-z0-9_-]{1,200}\.[A-Za-z0-9_-]{1,64}"),
    # A Redis stream id (two 64-bit numbers) or the embedded store's event count.
    "cursor": re.compile(r"[0-9]{1,20}-[0-9]{1,20}|[0-9]{1,9}"),
}


def well_formed(kind: str, value: str) -> bool:
    if not isinstance(value, str) or not SHAPES[kind].fullmatch(value):
        return False
    if kind == "cursor":
        return all(int(part) < 2**64 for part in value.split("-"))
    return True


def require(kind: str, value: str) -> str:
    """``value`` if it has the shape of a ``kind``; BadRequest (400) if not."""
    if not well_formed(kind, value):
        shown = value[:24] + ("…" if len(value) > 24 else "") if isinstance(value, str) else value
        raise BadRequest(f"malformed {kind} {shown!r}")
    return value


def digest(fields: dict) -> str:
    """A digest of a message's fields (as parsed; decrypted in safe mode), the same for every
    delivery of one message whatever its bytes (a re-encryption, another order of fields)."""
    parsed = {name: value for name, value in fields.items() if name != "raw"}  # WeRoBot keeps the bytes as "raw"
    canonical = json.dumps(parsed, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=repr)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Replays:
    """Signed URLs used once with one message (``keys.signed``, kept while the timestamp could
    still pass the freshness check)."""

    def __init__(self, config, store, keys) -> None:
        self.store = store
        self.keys = keys
        skew = float(config.MPBOT_MAX_CLOCK_SKEW)
        # A timestamp passes from now-skew to now+skew: remember it until then. With the freshness
        # check turned off (0, for tests of old samples only) any timestamp passes forever, and a
        # signature is remembered a day.
        self.ttl = 2 * skew + 5 if skew else 24 * 3600

    def first_use(self, signature: str, message_digest: str) -> bool:
        """Whether ``signature`` is new or came before with this same message (its digest, or a
        word for what is not a message: the console's URL check, a body that was refused).
        StoreError when the store cannot say: the caller must not act on the message then."""
        key = self.keys.signed(signature.lower())
        if self.store.set(key, message_digest, self.ttl, only_new=True):
            return True
        return self.store.get(key) in (message_digest, None)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address; an IPv4 one mapped into IPv6 (``::ffff:127.0.0.1``, as a server bound to
    ``[::]`` sees it) as the IPv4 address it is; None for what is not an address."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return getattr(ip, "ipv4_mapped", None) or ip


class Proxies:
    """The addresses ``X-Forwarded-For`` is believed from (gunicorn's ``forwarded_allow_ips``
    convention: addresses or networks, ``*`` for any)."""

    def __init__(self, allowed: list[str]) -> None:
        self.any = "*" in allowed
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in allowed if entry != "*"]

    def trusted(self, address: str) -> bool:
        if self.any:
            return True
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.networks)

    def client(self, environ: dict) -> str:
        """The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
        address in ``X-Forwarded-For`` that is not one (the ones further left are the client's
        own claims)."""
        peer = _ip(environ.get("REMOTE_ADDR") or "")
        address = str(peer) if peer is not None else environ.get("REMOTE_ADDR") or ""
        if not self.trusted(address):
            return address
        for hop in reversed((environ.get("HTTP_X_FORWARDED_FOR") or "").split(",")[-16:]):
            ip = _ip(hop.strip())
            if ip is None:
                break  # a hop a proxy did not write: trust nothing further left
            address = str(ip)
            if not self.trusted(address):
                break
        return address

    @staticmethod
    def local(environ: dict) -> bool:
        """Whether the request comes from this host itself and not through a proxy: a loopback
        peer and no forwarding header. (A proxy on this host that adds no such header cannot be
        told apart: a proxy in front must add X-Forwarded-For, as deploy/nginx.conf does.)"""
        if any(environ.get(h) for h in ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED")):
            return False
        peer = _ip(environ.get("REMOTE_ADDR") or "")
        return peer is not None and peer.is_loopback


class Polls:
    """Long-polls held by this process: at most ``per_link`` on one answer, ``per_client`` from
    one address and ``total`` in all. Over a limit, the page is answered at once and asks again
    a few seconds later, as a plain refreshing page does."""

    def __init__(self, per_link: int, per_client: int, total: int) -> None:
        self.limits = {"link": per_link, "client": per_client, "total": total}
        self.held: Counter = Counter()
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self, link: str, client: str):
        """Yields True with a slot held, False when a limit is reached."""
        names = [("link", link), ("client", client), ("total", "")]
        with self.lock:
            if any(self.held[name] >= self.limits[name[0]] for name in names):
                free = False
            else:
                free = True
                self.held.update(names)
        try:
            yield free
        finally:
            if free:
                with self.lock:
                    self.held.subtract(names)
                    for name in names:
                        if self.held[name] <= 0:
                            del self.held[name]
