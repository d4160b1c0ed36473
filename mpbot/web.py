"""The WSGI app: ``/wechat`` (the webhook), ``/answer/<token>`` (the answer page, and
``/answer/<token>/poll`` for its live updates), ``/history/<token>`` (a session's questions and
answers), ``/healthz``.

``create_app(overrides)`` builds everything from the settings; tests pass overrides instead of
touching globals. Nothing here answers a 5xx to WeChat: bad requests get a 4xx and a log line,
everything else a reply the subscriber can read.
"""

import contextlib
import hmac
import json
import logging
import os
import time

from bottle import Bottle, HTTPResponse, request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import metrics
from .answers import START, fold
from .bot import Bot
from .config import load_config
from .errors import BadRequest, Forbidden, StoreError, TooLarge
from .formatting import xml_safe
from .guard import Polls, Proxies, Replays, require
from .pages import headers as page_headers
from .pages import markdown_html, nonce, view
from .services import Services
from .wechat import MAX_BODY, Crypto, parse_request, render, signature_ok, text_reply
from .window import Window

log = logging.getLogger(__name__)

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "templates")
XML = "application/xml; charset=utf-8"
TEXT = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
PLAINTEXT_NOTICE_TTL = 3600  # how long `mpbot check` reports a refused plaintext message
BUSY_POLL_WAIT = 5  # seconds a page over a long-poll limit waits before it asks again
with open(os.path.join(TEMPLATES, "favicon.svg"), "rb") as _icon:
    FAVICON = _icon.read()


class WebServices(Services):
    """The composition root's services, and what only a web process needs on top of them."""

    def __init__(self, config) -> None:
        super().__init__(config)
        window = Window(config, self.store, self.keys, self.answers, self.reader)
        self.bot = Bot(self, window)
        aes_keys = [config.WECHAT_ENCODING_AES_KEY, config.WECHAT_PREVIOUS_ENCODING_AES_KEY]
        self.crypto = Crypto(config.WECHAT_TOKEN, config.WECHAT_APPID, aes_keys) if any(aes_keys) else None
        self.templates = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
        self.registry = metrics.registry(self.metrics, self.runner)
        self.replays = Replays(config, self.store, self.keys)
        self.polls = Polls(config.MPBOT_POLLS_PER_LINK, config.MPBOT_POLLS_PER_CLIENT, config.MPBOT_POLLS_PER_PROCESS)


def _read_body(limit: int) -> bytes:
    length = request.content_length
    if length > limit:
        raise TooLarge(f"body of {length} bytes is over {limit}")
    body = request.environ["wsgi.input"].read(length if length >= 0 else limit + 1)
    if len(body) > limit:
        raise TooLarge(f"body is over {limit} bytes")
    return body


def _fresh(timestamp: str, skew: float) -> bool:
    """Whether a signed request's timestamp (well-formed) is close enough to now (``skew`` 0:
    any is)."""
    return not skew or abs(time.time() - int(timestamp)) <= skew


def _signed(query, config) -> None:
    """A request WeChat signed, recently: Forbidden or BadRequest if not."""
    if not query.signature:
        raise Forbidden("no signature")
    for name in ("timestamp", "nonce", "signature"):
        require(name, query.get(name, ""))
    if not signature_ok(config.WECHAT_TOKEN, query.timestamp, query.nonce, query.signature):
        raise Forbidden("signature does not match WECHAT_TOKEN")
    if not _fresh(query.timestamp, config.MPBOT_MAX_CLOCK_SKEW):
        raise Forbidden(f"timestamp {query.timestamp} is over {config.MPBOT_MAX_CLOCK_SKEW} s away", reason="stale")


def create_app(overrides=None) -> Bottle:
    config = load_config(overrides)
    services = WebServices(config)
    if config.embedded:
        log.info(
            "embedded mode: state in this process's memory, model calls in an in-process pool of %d threads "
            "(RQ workers install signal handlers and so need a main thread of their own; set REDIS_URL to use them)",
            config.MPBOT_EMBEDDED_WORKERS,
        )
    else:
        log.info("Redis mode: state in Redis, model calls as RQ jobs on queue %r", config.MPBOT_QUEUE)
    app = Bottle()
    app.mpbot = services
    proxies = Proxies(config.MPBOT_FORWARDED_ALLOW_IPS)

    def client() -> str:
        return proxies.client(request.environ)

    def refuse(exc: BadRequest) -> HTTPResponse:
        log.warning("refused %s %s from %s: %s", request.method, request.path, client(), exc)
        if request.path == "/wechat":
            services.metrics.count("refused", reason=exc.reason)
        if exc.reason == "plaintext":  # for `mpbot check` to name the console setting to change
            with contextlib.suppress(StoreError):
                services.store.set(services.keys.plaintext_refused(), str(time.time()), PLAINTEXT_NOTICE_TTL)
        return HTTPResponse(status=exc.status, body=f"{exc}\n", headers=TEXT)

    @app.route("/wechat", method=["GET", "POST"])
    def wechat():
        query = request.query
        incoming = None
        try:
            _signed(query, config)
            if request.method == "GET":  # the console's URL check
                echostr = require("echostr", query.echostr)
                once(query.signature, "url-check")
                return HTTPResponse(body=echostr, headers=TEXT)
            try:
                incoming = parse_request(_read_body(MAX_BODY), query, services.crypto)
            except BadRequest:
                with contextlib.suppress(StoreError):  # refused anyway
                    once(query.signature, "refused")  # spent: no other body may follow under it
                raise
            once(query.signature, incoming.digest)
        except BadRequest as exc:
            return refuse(exc)
        except StoreError as exc:  # whether the signature is spent is unknown: act on nothing
            log.error("replay check: store unreachable: %s", exc)
            if incoming is None:  # the console's URL check: it says the check failed; try again
                return HTTPResponse(status=503, body="store unreachable\n", headers=TEXT)
            if incoming.message is None:
                return HTTPResponse(body=render(incoming, None), headers={"Content-Type": XML})
            apology = text_reply(incoming.message, config.text("store_down"))
            return HTTPResponse(body=render(incoming, apology), headers={"Content-Type": XML})
        reply = None if incoming.message is None else services.bot.reply(incoming.message)
        body = render(incoming, reply)
        return HTTPResponse(body=body, headers={"Content-Type": XML})

    def once(signature: str, what: str) -> None:
        """Forbidden if ``signature`` came before with something other than ``what``."""
        if not services.replays.first_use(signature, what):
            raise Forbidden("this signature came before with another message", reason="replay")

    @app.get("/metrics")
    def metrics_page():
        token = config.MPBOT_METRICS_TOKEN
        given = request.get_header("Authorization", "")
        if token and not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return refuse(Forbidden("/metrics needs Authorization: Bearer MPBOT_METRICS_TOKEN"))
        if not token and not proxies.local(request.environ):
            return refuse(
                Forbidden("/metrics answers this host only: set MPBOT_METRICS_TOKEN to read it from elsewhere")
            )
        try:
            body = generate_latest(services.registry)
        except StoreError as exc:
            log.error("metrics: store unreachable: %s", exc)
            return HTTPResponse(status=503, body="store unreachable\n", headers=TEXT)
        return HTTPResponse(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})

    @app.get("/healthz")
    def healthz():
        """``ok`` or ``unhealthy``, and why in words: no host, port or URL (it is public). Within a
        second either way: a Redis that hangs is unhealthy, not a check that hangs too."""
        if not services.store.healthy(services.keys.health()):
            log.error("healthz: the store (Redis) does not take a write within a second")
            return HTTPResponse(status=503, body="unhealthy: the store (Redis) does not answer\n", headers=TEXT)
        store = "in memory" if config.embedded else "Redis"
        return HTTPResponse(body=f"ok: store {store} answers\n", headers=TEXT)

    # The pages' texts, with the command names filled in (TEXTS["page_next"] names 继续).
    texts = {name: config.text(name) for name in config.TEXTS if name.startswith("page_")}
    texts["ai_label"] = config.text("ai_label", tap=False)  # the rules on AI content: on every answer page

    def render_page(template: str, script_nonce: str = "", **context) -> str:
        # ``root``: the app's root relative to the page, so that it works under a proxy's sub-path.
        root = "../" * request.path.count("/", 1)
        return services.templates.get_template(template).render(texts=texts, nonce=script_nonce, root=root, **context)

    def page(template: str, status: int = 200, script_nonce: str = "", **context) -> HTTPResponse:
        body = render_page(template, script_nonce, **context)
        return HTTPResponse(status=status, body=body, headers=page_headers(script_nonce))

    @app.get("/")
    def home():
        """What this server is, for whoever opens its address; nothing secret."""
        return page("index.html")

    @app.get("/favicon.svg")
    @app.get("/favicon.ico")
    def favicon():
        headers = {"Content-Type": "image/svg+xml", "Cache-Control": "public, max-age=86400"}
        return HTTPResponse(body=FAVICON, headers=headers)

    def error_page(status: int, text: str):
        def handler(error) -> str:
            for name, value in page_headers().items():
                error.set_header(name, value)
            return render_page("error.html", message=config.text(text), next="")

        app.error_handler[status] = handler

    error_page(404, "page_not_found")
    error_page(405, "page_not_found")
    error_page(500, "page_error")

    def link(token: str, kind: str = "answer") -> str | None:
        """What a page link points to; None for a link forged, altered or expired; BadRequest
        for something that is not shaped like a link at all."""
        return services.links.verify(require("link", token), kind)

    @app.get("/answer/<token>")
    def answer(token):
        try:
            msgid = link(token)
        except BadRequest as exc:
            log.info("answer page: %s from %s", exc, client())
            return page("answer.html", 400, view=None, message=config.text("page_invalid"))
        if msgid is None:
            return page("answer.html", 404, view=None, message=config.text("page_invalid"))
        try:
            events, cursor = services.answers.read(msgid)
        except StoreError as exc:
            log.error("answer page: store unreachable: %s", exc)
            return page("answer.html", 503, view=None, message=config.text("page_store_down"))
        answer = fold(events)
        if answer.state == "gone":  # never asked, or kept past MPBOT_ANSWER_TTL
            return page("answer.html", 404, view=None, message=config.text("page_gone"))
        services.metrics.count("pages_viewed", page="answer")
        return page(
            "answer.html",
            script_nonce=nonce(),
            view=view(config, answer, cursor),
            question=xml_safe(answer.question or ""),
            # Relative, so the page works behind a proxy that serves the app under a path.
            poll_url=f"{token}/poll",
        )

    @app.get("/answer/<token>/poll")
    def poll(token):
        """What is new since ``after``: waits up to ``MPBOT_PAGE_POLL`` seconds for it (a
        blocking read, no busy loop), then the whole answer so far as HTML. Over a long-poll
        limit (``guard.Polls``) it answers at once and tells the page to wait before asking again."""
        json_headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
        after = request.query.get("after") or START
        try:
            msgid = link(token)
            require("cursor", after)
        except BadRequest as exc:
            return refuse(exc)
        if msgid is None:
            return HTTPResponse(status=404, body='{"error": "invalid link"}', headers=json_headers)
        try:
            with services.polls.slot(msgid, client()) as free:
                if free:
                    services.answers.read(msgid, after, config.MPBOT_PAGE_POLL)  # returns once there is news
                events, cursor = services.answers.read(msgid)
        except StoreError as exc:
            log.error("answer page: store unreachable: %s", exc)
            return HTTPResponse(status=503, body='{"error": "store unavailable"}', headers=json_headers)
        shown = view(config, fold(events), cursor)
        if not free:
            shown["wait"] = BUSY_POLL_WAIT
        return HTTPResponse(body=json.dumps(shown, ensure_ascii=False), headers=json_headers)

    @app.get("/history/<token>")
    def history(token):
        try:
            sid = link(token, "history")
        except BadRequest as exc:
            log.info("history page: %s from %s", exc, client())
            return page("history.html", 400, turns=None, message=config.text("page_invalid"))
        if sid is None:
            return page("history.html", 404, turns=None, message=config.text("page_invalid"))
        try:
            turns = services.sessions.history(sid)
        except StoreError as exc:
            log.error("history page: store unreachable: %s", exc)
            return page("history.html", 503, turns=None, message=config.text("page_store_down"))
        services.metrics.count("pages_viewed", page="history")
        return page("history.html", turns=[{"q": xml_safe(t["q"]), "html": markdown_html(t["a"])} for t in turns])

    return app
