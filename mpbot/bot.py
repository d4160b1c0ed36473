"""The handlers: glue between WeChat's messages and events, the window, sessions and replies.

Every message type and event WeChat sends has a handler here, and anything else (a type or event
WeChat adds later) gets ``SUCCESS`` and one log line. A handler returns a ``TextReply``,
``SUCCESS`` (no reply: WeChat stops retrying) or None (a delivery that stays silent while an
answer is on its way). A handler never raises: an error becomes a text the subscriber can read.
"""

import hashlib
import logging
import time

from . import emoticons, media
from .autoreply import AutoReplies
from .errors import StoreError
from .inbox import Reply
from .logs import user_tag
from .moderation import Moderator
from .sessions import Commands
from .wechat import SUCCESS, text_reply

log = logging.getLogger(__name__)


# What WeChat sends in place of a sticker, or anything else it cannot pass on, as a text message.
PLACEHOLDER = "【收到不支持的消息类型，暂无法显示】"
# Messages the bot cannot read: they get TEXTS["unsupported"] (or an answer that waits).
MEDIA = ("location", "link", "file")
VIDEO = ("video", "shortvideo")
# Events WeChat sends about what a subscriber did or about the account, that need no reply: the
# menu's links and WeChat's own pickers (what they pick comes as a message of its own), QR scans
# by subscribers, reported locations, the results of mass and template sends, subscriptions to
# one-off messages, cards, mini programs, publishing.
QUIET_EVENTS = (
    "view",
    "scan",
    "location",
    "scancode_push",
    "pic_sysphoto",
    "pic_photo_or_album",
    "pic_weixin",
    "location_select",
    "view_miniprogram",
    "masssendjobfinish",
    "templatesendjobfinish",
    "publishjobfinish",
    "subscribe_msg_popup_event",
    "subscribe_msg_change_event",
    "subscribe_msg_sent_event",
    "user_get_card",
    "user_del_card",
    "user_consume_card",
    "user_view_card",
    "user_gifting_card",
    "user_enter_session_from_card",
    "card_pass_check",
    "card_not_pass_check",
    "update_member_card",
    "card_sku_remind",
    "card_pay_order",
    "submit_membercard_user_info",
    "user_pay_from_pay_cell",
    "qualification_verify_success",
    "qualification_verify_fail",
    "naming_verify_success",
    "naming_verify_fail",
    "annual_renew",
    "verify_expired",
    "kf_create_session",
    "kf_close_session",
    "kf_switch_session",
    "poi_check_notify",
    "wificonnected",
    "user_scan_product",
    "user_scan_product_enter_session",
    "user_scan_product_async",
    "user_scan_product_verify_action",
    "user_info_modified",
    "user_authorization_revoke",
    "user_authorization_cancellation",
    "guide_qrcode_scan_event",
    "merchant_order",
    "user_enter_tempsession",
)


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
        self.media = services.media
        self.window = window
        self.commands = Commands(config)
        self.moderator = Moderator(config)
        self.autoreplies = AutoReplies.of(config)
        self.handlers = {
            "text": self.on_text,
            "voice": self.on_voice,
            "image": self.on_image,
            **{kind: self.on_video for kind in VIDEO},
            **{kind: self.on_media for kind in MEDIA},
            "subscribe_event": self.on_subscribe,
            "unsubscribe_event": self.on_unsubscribe,
            "click_event": self.on_click,
            "scancode_waitmsg_event": self.on_click,  # a menu button that waits for a reply
            **{f"{event}_event": self.on_quiet for event in QUIET_EVENTS},
        }

    def reply(self, message):
        """The reply to one delivery: a TextReply, SUCCESS, or None (silence)."""
        handler = self.handlers.get(getattr(message, "type", ""), self.on_unknown)
        try:
            return handler(message)
        except StoreError as exc:
            log.error("store unreachable, apologised to user=%s: %s", user_tag(message.source), exc)
            return text_reply(message, self.config.text("store_down"))
        except Exception:
            log.exception("handler %s failed for user=%s", handler.__name__, user_tag(message.source))
            return text_reply(message, self.config.text("error"))

    # --- messages --------------------------------------------------------------------------

    def on_text(self, message):
        content = message.content or ""
        if content.strip() == PLACEHOLDER:  # a sticker: no question, but it fetches a waiting answer
            return self.converse(message, "", otherwise=self.config.text("sticker"))
        if not content.strip():  # nothing to ask (WeChat does not send these, but a client might)
            return self.converse(message, "", otherwise=self.config.text("blank"))
        return self.converse(message, content)

    def on_voice(self, message):
        """WeChat's own transcript (Recognition) is a text, with what was heard shown first;
        without it the job fetches the audio and transcribes it (media.py)."""
        recognition = message.recognition if isinstance(message.recognition, str) else ""
        if recognition.strip():
            return self.converse(message, recognition, attachment={"kind": media.VOICE, "recognised": True})
        attachment = media.voice_of(message)
        if attachment is None or not self.media.can_transcribe:
            if attachment is None:
                log.info("voice from user=%s without a usable MediaId: asked to type", user_tag(message.source))
            return self.converse(message, "", otherwise=self.config.text("voice_unrecognised"))
        return self.converse(message, self.config.text("voice_question"), attachment=attachment)

    def on_image(self, message):
        attachment = media.picture_of(message) if self.config.MPBOT_PICTURES else None
        if attachment is None:
            if self.config.MPBOT_PICTURES:
                log.info("picture from user=%s with neither a usable PicUrl nor MediaId", user_tag(message.source))
            return self.on_media(message)
        return self.converse(message, self.config.text("picture_question"), attachment={**attachment, "alone": True})

    def on_video(self, message):
        return self.converse(message, "", otherwise=self.config.text("video"))

    def on_media(self, message):
        return self.converse(message, "", otherwise=self.config.text("unsupported"))

    def converse(
        self, message, text: str, otherwise: str = "", msgid: str | None = None, attachment: dict | None = None
    ):
        """Answer a message: ``text`` is a command, a keyword, or a question; with ``otherwise``
        set it is none of them, and gets that reply unless an answer is waiting to be read (any
        message fetches). ``msgid``: the id its deliveries share (a message's MsgId by default).
        ``attachment``: its picture or voice (media.py); a question goes with the subscriber's
        latest picture when it was sent within ``MPBOT_PICTURE_TTL`` seconds."""
        openid, msgid = message.source, msgid or str(message.message_id)
        # A picture, or a voice message not heard yet, is a question: no command, no keyword.
        literal = attachment is None or attachment.get("recognised")
        command = None if otherwise or not literal else self.commands.match(text)
        keyword = None if otherwise or command or not literal else self.autoreplies.match(text)

        def first() -> Reply:
            if otherwise:
                return self.reader.take(openid, msgid, otherwise=otherwise)
            if command == "next":
                return self.reader.take(openid, msgid, otherwise=self.config.text("nothing_more"))
            if command:
                reply = self.commands.run(command, self.sessions, self.reader, self.links, self.metrics, openid)
                return self.reader.say(openid, msgid, reply)
            if keyword is not None:
                self.metrics.count("keyword_replies")
                return self.reader.say(openid, msgid, keyword)
            sid = self.sessions.open(openid) if self.config.MPBOT_ALWAYS_ON else self.sessions.touch(openid)
            question = emoticons.readable(text.strip())
            refusal = self._refusal(openid, question) if sid is not None else None
            if refusal is not None:
                return self.reader.say(openid, msgid, self.config.text(refusal))
            if sid is not None:
                self._attach(openid, msgid, attachment)
            return self.reader.take(openid, msgid, question, sid)

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

    def _attach(self, openid: str, msgid: str, attachment: dict | None) -> None:
        """Keep the question's picture or voice for its job, or the picture sent lately."""
        if not self.config.MPBOT_PICTURES:
            found = attachment
        elif attachment is not None and attachment.get("kind") == media.PICTURE:
            self.media.remember_picture(openid, attachment)
            found = attachment
        else:
            recent = self.media.recent_picture(openid)
            if recent is not None:
                recent = {**recent, "alone": False}
            if attachment is None:
                found = recent
            elif attachment.get("recognised") and recent is not None:
                found = {**recent, "recognised": True}
            else:
                found = {**attachment, "picture": recent} if recent is not None else attachment
        if found is not None:
            self.media.attach(msgid, found)

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
        return SUCCESS

    def on_click(self, message):
        """A custom menu button (MPBOT_MENU): its reply text, or the command it stands for."""
        key = message.key or ""
        value = self.config.MPBOT_MENU.get(key)
        if value is None:
            log.info(
                "menu %s key=%r from user=%s: not in MPBOT_MENU, no reply",
                message.type,
                key[:64],
                user_tag(message.source),
            )
            return SUCCESS
        if self.commands.match(value):
            # Its retries share one id, as a message's share its MsgId: the command runs once
            # (and two buttons pressed within a second are two).
            button = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
            return self.converse(message, value, msgid=f"menu-{message.source}-{message.time}-{button}")
        return text_reply(message, value)

    def on_quiet(self, message):
        log.debug("event %s from user=%s: no reply needed", message.type, user_tag(message.source))
        return SUCCESS

    def on_unknown(self, message):
        if getattr(message, "logged", False):  # said already, where it was read
            return SUCCESS
        log.info(
            "no handler for a %s from user=%s: answered success (a type or event this bot does not know)",
            str(getattr(message, "type", "?"))[:64],
            user_tag(message.source),
        )
        return SUCCESS
