"""What must hold before a process starts serving: its port free, Redis answering.

Each failure is one line that names the fix, and the process exits non-zero at once, so that a
supervisor (systemd, a Procfile runner) applies its restart policy instead of watching a process
that logs the same retry forever. Used by ``mpbot serve``, the web's gunicorn config and the
worker.
"""

import errno
import os
import socket
import time
from urllib.parse import urlsplit

REDIS_WAIT = 10.0  # seconds Redis may take to answer at start (it may be starting beside us)


def where(url: str) -> str:
    """A Redis URL without its password: ``redis://host:port/db``."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{parts.hostname or '?'}:{parts.port or 6379}{parts.path}"


def bind_address() -> str:
    """Where the web process listens: ``BIND`` (host:port), else 0.0.0.0 and ``PORT`` (8000)."""
    return os.environ.get("BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"


def port_problem(bind: str) -> str | None:
    """Why the web process cannot listen at ``bind``, in one line; None when it can (or when it is
    not ours to probe: a unix socket or a file descriptor, or sockets gunicorn or systemd hand
    over, as in gunicorn's USR2 upgrade, where the old master still holds the port)."""
    if os.environ.get("GUNICORN_FD") or os.environ.get("LISTEN_FDS"):
        return None
    if bind.startswith(("unix:", "fd://")):
        return None
    bind = bind.removeprefix("tcp://")
    if ":" not in bind:
        bind = f"0.0.0.0:{bind}" if bind.isdigit() else f"{bind}:8000"  # gunicorn's defaults
    host, _, port_text = bind.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 (where gunicorn will listen, probed)
    setting = "BIND" if os.environ.get("BIND") else "PORT"
    try:
        port = int(port_text)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (ValueError, OSError) as exc:
        return f"cannot listen at {bind!r} ({exc}): set {setting} to host:port or a port number"
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} is already in use on {host}: stop what listens there "
                    f"(`ss -ltnp 'sport = :{port}'` shows it), or set {setting} to a free port"
                )
            if exc.errno == errno.EACCES:
                return f"port {port} needs root: run behind a proxy (nginx) on a port above 1024, set with {setting}"
            return f"cannot listen on {host}:{port} ({exc.strerror}): check {setting}"
    return None


def redis_problem(url: str, wait: float = REDIS_WAIT) -> str | None:
    """Why Redis at ``url`` cannot be used, in one line (never the password); None once it
    answers. Tries for ``wait`` seconds, for a Redis that is starting at the same time."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                client.ping()
                return None
            except redis.AuthenticationError:
                return f"Redis at {where(url)} refused the password in REDIS_URL: set the one Redis requires"
            except redis.ResponseError as exc:  # NOAUTH and the like: it answers, but not to us
                return f"Redis at {where(url)} refused the connection ({_said(exc, url)}): check REDIS_URL's password"
            except redis.RedisError as exc:
                if time.monotonic() >= deadline:
                    return (
                        f"Redis at {where(url)} does not answer after {wait:g} s ({_said(exc, url)}): "
                        "start Redis, or fix REDIS_URL (host, port, password)"
                    )
                time.sleep(0.5)
    finally:
        client.close()


def _said(exc: Exception, url: str) -> str:
    text = f"{exc.__class__.__name__}: {exc}"
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


def on_the_internet(public_url: str) -> bool:
    """Whether ``PUBLIC_URL``'s host can be on the internet (not loopback, private or .local)."""
    import ipaddress

    host = urlsplit(public_url).hostname or ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host != "localhost" and not host.endswith(".local")
    return ip.is_global


def public_url_problem(public_url: str) -> str | None:
    """Why subscribers' phones cannot open links under ``PUBLIC_URL`` (a loopback or private
    address, plain http for a public host), in one line; None when they can."""
    if not on_the_internet(public_url):
        return (
            f"PUBLIC_URL={public_url} is not on the internet: subscribers' phones cannot open the answer "
            "links; set PUBLIC_URL to this bot's public https address (e.g. https://bot.example.com)"
        )
    if urlsplit(public_url).scheme != "https":
        return (
            f"PUBLIC_URL={public_url} is plain http: WeChat's browser warns before opening such links, and "
            "they can be read on the way; serve https (see the README's deploy section) and set PUBLIC_URL to it"
        )
    return None
