"""WeRoBot handlers: glue between WeChat messages, the window, sessions and the replies.

Each handler returns a ``TextReply`` (or None for no reply). A handler never raises: WeRoBot
would swallow the error and answer with silence, which tells WeChat the message was handled.
"""

import functools
import logging
import time

import werobot

from .errors import StoreError
from .inbox import Reply
from .logs import user_tag
from .moderation import Moderator
from .sessions import Commands
from .wechat import text_reply

log = logging.getLogger(__name__)


class Bot:
    def __init__(self, services, window) -> None:
        config = services.config
        self.config = config
        self.store = services.store
        self.keys = services.keys
        self.sessions = services.sessions
        self.metrics = services.metrics
        self.reader = services.reader
        self.links = services.links
        self.window = window
        self.commands = Commands(config)
        self.moderator = Moderator(config)
        self.robot = werobot.WeRoBot(token=config.WECHAT_TOKEN, SESSION_STORAGE=False)
        self.robot.text(self._guard(self.on_text))
        self.robot.voice(self._guard(self.on_voice))
        for kind in ("image", "video", "shortvideo", "location", "link"):
            getattr(self.robot, kind)(self._guard(self.on_unsupported))
        self.robot.subscribe(self._guard(self.on_subscribe))
        self.robot.unsubscribe(self._guard(self.on_unsubscribe))

    def reply(self, message):
        return self.robot.get_reply(message)

    def _guard(self, handler):
        @functools.wraps(handler)
        def guarded(message):
            try:
                return handler(message)
            except StoreError as exc:
                log.error("store unreachable, apologised to user=%s: %s", user_tag(message.source), exc)
                return text_reply(message, self.config.text("store_down"))
            except Exception:
                log.exception("handler %s failed for user=%s", handler.__name__, user_tag(message.source))
                return text_reply(message, self.config.text("error"))

        return guarded

    # --- messages --------------------------------------------------------------------------

    def on_text(self, message):
        return self.converse(message, message.content or "")

    def on_voice(self, message):
        if message.recognition and message.recognition.strip():
            return self.converse(message, message.recognition)
        return self.converse(message, "", otherwise=self.config.text("voice_unrecognised"))

    def on_unsupported(self, message):
        return self.converse(message, "", otherwise=self.config.text("unsupported"))

    def converse(self, message, text: str, otherwise: str = ""):
        """Answer a message: ``text`` is a command or a question; with ``otherwise`` set it is
        neither, and gets that reply unless an answer is waiting to be read (any message fetches)."""
        openid, msgid = message.source, str(message.message_id)
        command = None if otherwise else self.commands.match(text)

        def first() -> Reply:
            if otherwise:
                return self.reader.take(openid, msgid, otherwise=otherwise)
            if command == "next":
                return self.reader.take(openid, msgid, otherwise=self.config.text("nothing_more"))
            if command:
                reply = self.commands.run(command, self.sessions, self.reader, self.links, self.metrics, openid)
                return self.reader.say(openid, msgid, reply)
            sid = self.sessions.touch(openid)
            refusal = self._refusal(openid, text) if sid is not None else None
            if refusal is not None:
                return self.reader.say(openid, msgid, self.config.text(refusal))
            return self.reader.take(openid, msgid, text.strip(), sid)

        started = time.monotonic()
        n, outcome, reply = self.window.deliver(openid, msgid, first)
        self.metrics.count("deliveries", outcome=outcome, delivery=n)
        log.info(
            "delivery msgid=%s user=%s n=%d outcome=%s waited_ms=%d",
            msgid,
            user_tag(openid),
            n,
            outcome,
            (time.monotonic() - started) * 1000,
        )
        return None if reply is None else text_reply(message, reply)

    def _refusal(self, openid: str, question: str) -> str | None:
        """Why a question in a session is not taken (a TEXTS name), or None to take it."""
        if not self.moderator.allowed(question, "question"):
            log.info("question refused by moderation for user=%s", user_tag(openid))
            return "banned"
        limit = self.config.MPBOT_RATE_LIMIT
        if limit and self.store.incr(self.keys.rate(openid), self.config.MPBOT_RATE_WINDOW) > limit:
            log.info("question refused by the rate limit for user=%s", user_tag(openid))
            return "rate_limited"
        return None

    # --- events ----------------------------------------------------------------------------

    def on_subscribe(self, message):
        # No side effect to repeat: a retried subscribe (our reply was lost) gets the welcome again.
        return text_reply(message, self.config.text("welcome"))

    def on_unsubscribe(self, message):
        first = self.store.set(
            self.keys.event(message.source, str(message.time)), "1", self.config.MPBOT_EVENT_TTL, only_new=True
        )
        if first:
            self.sessions.end(message.source)
            self.reader.drop(message.source)
            log.info("unsubscribe user=%s: session and history dropped", user_tag(message.source))
        return None
