"""The WSGI app: ``/wechat`` (the webhook), ``/answer/<token>`` (the answer page), ``/healthz``.

``create_app(overrides)`` builds everything from the settings; tests pass overrides instead of
touching globals. Nothing here answers a 5xx to WeChat: bad requests get a 4xx and a log line,
everything else a reply the subscriber can read.
"""

import logging
import os

from bottle import Bottle, HTTPResponse, request
from jinja2 import Environment, FileSystemLoader, select_autoescape

from .bot import Bot
from .config import load_config
from .errors import BadRequest, Forbidden, StoreError, TooLarge
from .jobs import make_runner
from .links import Links
from .store import make_store
from .wechat import MAX_BODY, Crypto, parse_request, render, signature_ok
from .window import Window

log = logging.getLogger(__name__)

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "templates")
XML = "application/xml; charset=utf-8"


class Services:
    """Everything one app instance holds; ``close()`` releases it."""

    def __init__(self, config) -> None:
        self.config = config
        self.store = make_store(config)
        self.runner = make_runner(config, self.store)
        self.links = Links(config)
        self.bot = Bot(config, self.store, Window(config, self.store), self.runner, self.links)
        keys = [config.WECHAT_ENCODING_AES_KEY, config.WECHAT_PREVIOUS_ENCODING_AES_KEY]
        self.crypto = Crypto(config.WECHAT_TOKEN, config.WECHAT_APPID, keys) if any(keys) else None
        self.templates = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))

    def close(self) -> None:
        self.runner.close()
        self.store.close()


def _read_body(limit: int) -> bytes:
    length = request.content_length
    if length > limit:
        raise TooLarge(f"body of {length} bytes is over {limit}")
    body = request.environ["wsgi.input"].read(length if length >= 0 else limit + 1)
    if len(body) > limit:
        raise TooLarge(f"body is over {limit} bytes")
    return body


def create_app(overrides=None) -> Bottle:
    config = load_config(overrides)
    services = Services(config)
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

    @app.get("/healthz")
    def healthz():
        try:
            detail = services.store.ping()
        except StoreError as exc:
            log.error("healthz: store unreachable: %s", exc)
            return HTTPResponse(status=503, body=f"unhealthy: {exc}\n", headers={"Content-Type": "text/plain"})
        return HTTPResponse(body=f"ok: {detail}\n", headers={"Content-Type": "text/plain"})

    @app.get("/answer/<token>")
    def answer(token):
        page = services.templates.get_template("answer.html")
        headers = {
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": "no-store",
            # The token in the URL is the key to the answer: never send it on as a Referer.
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        }
        msgid = services.links.verify(token)
        if msgid is None:
            return HTTPResponse(status=404, body=page.render(state="invalid", texts=config.TEXTS), headers=headers)
        try:
            event = services.store.wait(msgid, 0)
        except StoreError as exc:
            log.error("answer page: store unreachable: %s", exc)
            return HTTPResponse(status=503, body=page.render(state="store_down", texts=config.TEXTS), headers=headers)
        state = event["state"] if event else "pending"
        error = services.bot.render(msgid, event) if state == "error" else ""
        body = page.render(state=state, event=event, error=error, texts=config.TEXTS)
        return HTTPResponse(body=body, headers=headers)

    return app
