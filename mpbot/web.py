"""The WSGI app: ``/wechat`` (the webhook), ``/answer/<token>`` (the answer page, and
``/answer/<token>/poll`` for its live updates), ``/history/<token>`` (a session's questions and
answers), ``/healthz``.

``create_app(overrides)`` builds everything from the settings; tests pass overrides instead of
touching globals. Nothing here answers a 5xx to WeChat: bad requests get a 4xx and a log line,
everything else a reply the subscriber can read.
"""

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
from .pages import headers as page_headers
from .pages import markdown_html, nonce, view
from .services import Services
from .wechat import MAX_BODY, Crypto, parse_request, render, signature_ok
from .window import Window

log = logging.getLogger(__name__)

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "templates")
XML = "application/xml; charset=utf-8"


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


def _read_body(limit: int) -> bytes:
    length = request.content_length
    if length > limit:
        raise TooLarge(f"body of {length} bytes is over {limit}")
    body = request.environ["wsgi.input"].read(length if length >= 0 else limit + 1)
    if len(body) > limit:
        raise TooLarge(f"body is over {limit} bytes")
    return body


def _fresh(timestamp: str, skew: float) -> bool:
    """Whether a signed request's timestamp is close enough to now (``skew`` 0: any is)."""
    if not skew:
        return True
    return timestamp.isdigit() and len(timestamp) < 12 and abs(time.time() - int(timestamp)) <= skew


def _cursor_ok(cursor: str) -> bool:
    """A cursor as the stores make them: a Redis stream id or an event count."""
    left, _, right = cursor.partition("-")
    return len(cursor) < 48 and left.isdigit() and (right.isdigit() or not right and "-" not in cursor)


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

    def refuse(exc: BadRequest) -> HTTPResponse:
        log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote_addr, exc)
        return HTTPResponse(status=exc.status, body=f"{exc}\n", headers={"Content-Type": "text/plain; charset=utf-8"})

    @app.route("/wechat", method=["GET", "POST"])
    def wechat():
        query = request.query
        if not signature_ok(config.WECHAT_TOKEN, query.timestamp, query.nonce, query.signature):
            return refuse(Forbidden("signature does not match WECHAT_TOKEN"))
        if request.method == "POST" and not _fresh(query.timestamp, config.MPBOT_MAX_CLOCK_SKEW):
            return refuse(Forbidden(f"timestamp {query.timestamp[:20]!r} is over {config.MPBOT_MAX_CLOCK_SKEW} s away"))
        if request.method == "GET":
            if not query.echostr:
                return refuse(BadRequest("URL check without echostr"))
            return HTTPResponse(body=query.echostr, headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            incoming = parse_request(_read_body(MAX_BODY), query, services.crypto)
        except BadRequest as exc:
            return refuse(exc)
        body = render(incoming, services.bot.reply(incoming.message))
        return HTTPResponse(body=body, headers={"Content-Type": XML})

    @app.get("/metrics")
    def metrics_page():
        token = config.MPBOT_METRICS_TOKEN
        given = request.get_header("Authorization", "")
        if token and not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return refuse(Forbidden("/metrics needs Authorization: Bearer MPBOT_METRICS_TOKEN"))
        try:
            body = generate_latest(services.registry)
        except StoreError as exc:
            log.error("metrics: store unreachable: %s", exc)
            return HTTPResponse(status=503, body=f"store unreachable: {exc}\n", headers={"Content-Type": "text/plain"})
        return HTTPResponse(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})

    @app.get("/healthz")
    def healthz():
        try:
            detail = services.store.ping()
            services.store.set(services.keys.health(), "1", 60)  # it writes, too
        except StoreError as exc:
            log.error("healthz: store unreachable: %s", exc)
            return HTTPResponse(status=503, body=f"unhealthy: {exc}\n", headers={"Content-Type": "text/plain"})
        return HTTPResponse(body=f"ok: {detail}\n", headers={"Content-Type": "text/plain"})

    def page(template: str, status: int = 200, script_nonce: str = "", **context) -> HTTPResponse:
        body = services.templates.get_template(template).render(texts=config.TEXTS, nonce=script_nonce, **context)
        return HTTPResponse(status=status, body=body, headers=page_headers(script_nonce))

    @app.get("/answer/<token>")
    def answer(token):
        msgid = services.links.verify(token)
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
            question=answer.question,
            # Relative, so the page works behind a proxy that serves the app under a path.
            poll_url=f"{token}/poll",
        )

    @app.get("/answer/<token>/poll")
    def poll(token):
        """What is new since ``after``: waits up to ``MPBOT_PAGE_POLL`` seconds for it (a
        blocking read, no busy loop), then the whole answer so far as HTML."""
        json_headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
        msgid = services.links.verify(token)
        if msgid is None:
            return HTTPResponse(status=404, body='{"error": "invalid link"}', headers=json_headers)
        after = request.query.get("after") or START
        try:
            if not _cursor_ok(after):
                raise BadRequest(f"bad cursor {after!r}")
            services.answers.read(msgid, after, config.MPBOT_PAGE_POLL)  # returns once there is news
            events, cursor = services.answers.read(msgid)
        except BadRequest as exc:
            return refuse(exc)
        except StoreError as exc:
            log.error("answer page: store unreachable: %s", exc)
            return HTTPResponse(status=503, body='{"error": "store unavailable"}', headers=json_headers)
        body = json.dumps(view(config, fold(events), cursor), ensure_ascii=False)
        return HTTPResponse(body=body, headers=json_headers)

    @app.get("/history/<token>")
    def history(token):
        sid = services.links.verify(token, "history")
        if sid is None:
            return page("history.html", 404, turns=None, message=config.text("page_invalid"))
        try:
            turns = services.sessions.history(sid)
        except StoreError as exc:
            log.error("history page: store unreachable: %s", exc)
            return page("history.html", 503, turns=None, message=config.text("page_store_down"))
        services.metrics.count("pages_viewed", page="history")
        return page("history.html", turns=[{"q": t["q"], "html": markdown_html(t["a"])} for t in turns])

    return app
