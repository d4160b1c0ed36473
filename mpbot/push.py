"""Customer-service (客服) messages: how a verified account pushes a late answer into the chat.

``WeChatAPI`` holds the account's one access_token for every process and host: it lives in the
store (``keys.wx_token``), one process at a time fetches a new one (``keys.wx_token_lock``), some
minutes before the old one expires, and every fetch is counted against a daily limit. A call
refused with 40001/42001/40014 (the token is invalid or expired) gets a fresh token and is tried
once more.

The token comes from ``/cgi-bin/stable_token`` (getStableAccessToken): the AppSecret travels in
the POST body, never in a URL, and its tokens are separate from those of ``/cgi-bin/token``, so
another tool of the same account fetching its own token does not invalidate ours, nor ours its.

``Pusher`` sends one text and decides what a failure means: a failure of the whole account (no
permission, the IP not whitelisted, WeChat unreachable, a daily limit) pauses pushing for
``MPBOT_PUSH_PAUSE`` seconds; a failure for one subscriber (their 48 hours or their five messages
are used) concerns that subscriber only. Either way the answer stays where the subscriber's next
message fetches it, and each reason is logged once per pause, not once per message.

``Courier`` pushes one subscriber's late answers, part by part, while this process holds the
push lease in their inbox (``inbox.py`` decides what each message says and who holds the lease).
"""

import json
import logging
import secrets
import time
from operator import methodcaller

import requests

from .formatting import xml_safe

log = logging.getLogger(__name__)

TOKEN_REFUSED = {40001, 40014, 42001}  # invalid credential, invalid token, token expired
# errcode: (reason, whether it concerns the whole account, what the admin should know)
ERRORS = {
    48001: ("no_permission", True, "the account may not send customer-service messages: is it verified (微信认证)?"),
    45015: ("window_expired", False, "the subscriber's last message is over 48 hours old"),
    45047: ("quota_used", False, "the subscriber already got 5 messages since their last one"),
    45009: ("api_limit", True, "the account's daily limit for this API is used up"),
    43004: ("unsubscribed", False, "the subscriber has unfollowed the account"),
    40003: ("bad_openid", False, "WeChat does not know this subscriber's openid for this account"),
    40013: ("bad_credentials", True, "WECHAT_APPID is not a valid AppID"),
    40125: ("bad_credentials", True, "WECHAT_APPSECRET is not this account's AppSecret"),
    40164: ("ip_not_whitelisted", True, "this server's IP is not in the console's IP whitelist (基本配置 > IP白名单)"),
    -1: ("wechat_busy", True, "WeChat says it is busy (-1)"),
    # Refused again with a token fetched a moment ago.
    40001: ("token_refused", True, "WeChat refuses a freshly fetched access_token"),
    40014: ("token_refused", True, "WeChat refuses a freshly fetched access_token"),
    42001: ("token_refused", True, "WeChat refuses a freshly fetched access_token"),
}


class PushError(Exception):
    def __init__(self, reason: str, detail: str, account: bool) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.account = account  # the whole account, not one subscriber


def _error(payload: dict) -> PushError:
    code = payload.get("errcode")
    reason, account, detail = ERRORS.get(code, ("errcode", False, "WeChat refused the call"))
    if reason == "errcode":
        reason = f"errcode_{code}"
    return PushError(reason, f"{detail} ({code}: {payload.get('errmsg', '')})", account)


def _json_error(body: bytes) -> dict | None:
    """WeChat's error object, if ``body`` is one."""
    if not body.lstrip().startswith(b"{") or len(body) > 4096:
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) and "errcode" in payload else None


def beijing_day(now: float | None = None) -> str:
    """WeChat's daily limits start at midnight Beijing time (UTC+8)."""
    return time.strftime("%Y%m%d", time.gmtime((time.time() if now is None else now) + 8 * 3600))


class WeChatAPI:
    # Renew this long before the token expires (getStableAccessToken hands out a new one in a
    # token's last 5 minutes, and the old one keeps working for those 5 minutes).
    RENEW_BEFORE = 300

    def __init__(self, config, store, keys, metrics) -> None:
        self.config = config
        self.store = store
        self.keys = keys
        self.metrics = metrics
        self.base = config.WECHAT_API_BASE.rstrip("/")
        self.timeout = config.WECHAT_API_TIMEOUT
        self.http = requests.Session()

    # --- the access_token ------------------------------------------------------------------

    def _cached(self) -> dict | None:
        raw = self.store.get(self.keys.wx_token())
        return json.loads(raw) if raw else None

    def token(self, refused: str | None = None) -> str:
        """The account's access_token, shared by every process. ``refused``: a token WeChat just
        refused, which must not be handed out again."""
        cached = self._cached()
        if cached is not None and cached["token"] != refused:
            if time.time() < cached["renew_at"]:
                return cached["token"]
            # Due for renewal but still valid: one process renews it, the others go on with it.
            owner = self._lock()
            if owner is None:
                return cached["token"]
            try:
                return self._fetch()
            except PushError as exc:
                log.warning("access_token renewal failed, the current one is used until it expires: %s", exc.detail)
                return cached["token"]
            finally:
                self.store.delete_if(self.keys.wx_token_lock(), owner)
        # None at all (or the one we had was refused): one process fetches, the others wait for it.
        deadline = time.monotonic() + self.timeout + 1
        while True:
            owner = self._lock()
            if owner is not None:
                try:
                    cached = self._cached()  # fetched by the process that held the lock before us
                    if cached is not None and cached["token"] != refused:
                        return cached["token"]
                    return self._fetch()
                finally:
                    self.store.delete_if(self.keys.wx_token_lock(), owner)
            time.sleep(0.05)
            cached = self._cached()
            if cached is not None and cached["token"] != refused:
                return cached["token"]
            if time.monotonic() > deadline:
                raise PushError("token_wait", "another process has been fetching the access_token for too long", True)

    def _lock(self) -> str | None:
        owner = secrets.token_hex(8)
        taken = self.store.set(self.keys.wx_token_lock(), owner, self.timeout + 5, only_new=True)
        return owner if taken else None

    def _fetch(self) -> str:
        fetches = self.store.incr(self.keys.wx_fetches(beijing_day()), 2 * 86400)
        limit = self.config.WECHAT_TOKEN_DAILY_LIMIT
        if fetches > limit:
            raise PushError("token_limit", f"{limit} access_token fetches today (WECHAT_TOKEN_DAILY_LIMIT)", True)
        self.metrics.count("wechat_token_fetches")
        body = {
            "grant_type": "client_credential",
            "appid": self.config.WECHAT_APPID,
            "secret": self.config.WECHAT_APPSECRET,
            "force_refresh": False,
        }
        payload = self._post("/cgi-bin/stable_token", body)
        if not payload.get("access_token"):
            raise _error(payload)
        expires_in = int(payload.get("expires_in", 7200))
        now = time.time()
        renew_in = max(expires_in - self.RENEW_BEFORE, expires_in / 2)
        cached = {"token": payload["access_token"], "renew_at": now + renew_in}
        # Never handed out in its last half minute: a call made with it still has time to land.
        self.store.set(self.keys.wx_token(), json.dumps(cached), max(1, expires_in - 30))
        log.info("access_token fetched (%d today), valid %d s", fetches, expires_in)
        return payload["access_token"]

    # --- calls -----------------------------------------------------------------------------

    def _post(self, path: str, body: dict, token: str | None = None) -> dict:
        # WeChat shows \\uXXXX escapes literally: the body must carry the characters themselves.
        data = json.dumps(body, ensure_ascii=False).encode()
        return self._call("POST", path, token, data=data, headers={"Content-Type": "application/json; charset=utf-8"})

    def _get(self, path: str, token: str) -> dict:
        return self._call("GET", path, token)

    def _call(self, method: str, path: str, token: str | None, **request) -> dict:
        params = None if token is None else {"access_token": token}
        try:
            response = self.http.request(method, self.base + path, params=params, timeout=self.timeout, **request)
            payload = response.json()
        except (requests.RequestException, ValueError) as exc:
            # The exception's text can carry the URL, and so the token: name its class only.
            raise PushError("unreachable", f"WeChat's API did not answer ({exc.__class__.__name__})", True) from None
        if not isinstance(payload, dict):
            raise PushError("unreachable", "WeChat's API answered with something that is not a JSON object", True)
        return payload

    def autoreply_info(self) -> dict:
        """The console's auto-reply rules (``get_current_autoreply_info``)."""
        path = "/cgi-bin/get_current_autoreply_info"
        token = self.token()
        payload = self._get(path, token)
        if payload.get("errcode") in TOKEN_REFUSED:
            payload = self._get(path, self.token(refused=token))
        if payload.get("errcode", 0) != 0:
            raise _error(payload)
        return payload

    def media(self, media_id: str, max_bytes: int, timeout: float) -> bytes:
        """A message's picture or voice by its MediaId (``/cgi-bin/media/get``, kept by WeChat for
        3 days), at most ``max_bytes`` within ``timeout`` seconds. PushError ``expired`` for 40007
        (an expired or unknown MediaId), ``too_large``, or another reason."""
        from .media import IDENTITY, MediaError, read_capped

        ends = time.monotonic() + timeout
        token = self.token()
        for attempt in range(2):
            params = {"access_token": token, "media_id": media_id}
            try:
                left = max(0.1, ends - time.monotonic())
                url = self.base + "/cgi-bin/media/get"
                with self.http.get(url, params=params, timeout=left, stream=True, headers=IDENTITY) as response:
                    body = read_capped(response, max_bytes, ends, "media")
                    status = response.status_code
            except MediaError as exc:
                reason = "too_large" if exc.kind == "media_too_large" else "unreachable"
                raise PushError(reason, exc.detail, False) from None
            except requests.RequestException as exc:
                # The exception's text can carry the URL, and so the token: name its class only.
                raise PushError(
                    "unreachable", f"WeChat's API did not answer ({exc.__class__.__name__})", True
                ) from None
            # An error is a small JSON object, whatever the Content-Type says; a file never is.
            payload = _json_error(body)
            if payload is None:
                if status != 200 or not body:
                    raise PushError("unreachable", f"WeChat's media API answered HTTP {status}", True)
                return body
            if payload.get("errcode") in TOKEN_REFUSED and attempt == 0:
                log.info("WeChat refused the access_token (%s): fetching a new one", payload.get("errcode"))
                token = self.token(refused=token)
                continue
            if payload.get("errcode") == 40007:
                raise PushError(
                    "expired",
                    f"no such media: expired after 3 days, or not this account's (40007: {payload.get('errmsg', '')})",
                    False,
                )
            raise _error(payload)
        raise PushError("token_refused", "WeChat refuses a freshly fetched access_token", True)

    def send_text(self, openid: str, text: str) -> None:
        body = {"touser": openid, "msgtype": "text", "text": {"content": xml_safe(text)}}
        token = self.token()
        payload = self._post("/cgi-bin/message/custom/send", body, token)
        if payload.get("errcode") in TOKEN_REFUSED:
            log.info("WeChat refused the access_token (%s): fetching a new one", payload.get("errcode"))
            payload = self._post("/cgi-bin/message/custom/send", body, self.token(refused=token))
        if payload.get("errcode", 0) != 0:
            raise _error(payload)

    def close(self) -> None:
        self.http.close()


class Pusher:
    def __init__(self, config, store, keys, metrics) -> None:
        self.config = config
        self.store = store
        self.keys = keys
        self.metrics = metrics
        self.api = WeChatAPI(config, store, keys, metrics)
        self.pause = config.MPBOT_PUSH_PAUSE

    def available(self) -> bool:
        """Whether pushing is on for the account now (not paused after a failure)."""
        return self.store.get(self.keys.push_off()) is None

    def send(self, openid: str, text: str) -> None:
        """Push ``text`` to the subscriber; PushError if it did not go."""
        try:
            self.api.send_text(openid, text)
        except PushError as exc:
            self.metrics.count("pushes", outcome=exc.reason)
            if exc.account:
                self.store.set(self.keys.push_off(), exc.reason, self.pause)
            if self.store.set(self.keys.push_logged(exc.reason), "1", self.pause, only_new=True):
                then = (
                    f"pushing is paused for {self.pause:g} s; meanwhile late answers wait behind the page link "
                    "and the next message"
                    if exc.account
                    else "this subscriber's late answer waits for their next message"
                )
                log.warning("push failed (%s): %s; %s (logged once per %g s)", exc.reason, exc.detail, then, self.pause)
            raise
        self.metrics.count("pushes", outcome="sent")

    def close(self) -> None:
        self.api.close()


# The first pushed message of an answer waits this long after the reply that said it is coming,
# so that the two arrive in that order.
AFTER_REPLY = 1.0


class Courier:
    """Pushes one subscriber's late answers while this process holds their push lease (taken by
    ``Inbox.finish``, kept in their inbox): oldest first, part by part, while WeChat allows more
    messages. A lease not renewed for a minute lapses (its process died); the subscriber's next
    message then fetches whatever was not pushed."""

    def __init__(self, pusher: Pusher, inboxes, answers) -> None:
        self.pusher = pusher
        self.inboxes = inboxes  # load and apply transitions (reader.Inboxes)
        self.answers = answers

    def run(self, openid: str, owner: str) -> None:
        while True:
            now = time.time()
            inbox = self.inboxes.load(openid)
            if not inbox.holds(owner):
                return  # the lease lapsed and another process took over
            question = inbox.next_push(now)
            if question is None:
                if self.inboxes.apply(openid, methodcaller("release", owner, now)):
                    return
                continue  # another answer became pushable meanwhile
            answer = self.answers.get(question.id)
            if answer.final is None and answer.state != "gone":
                # Its job ended without writing its end (Redis failed it): leave it to the next
                # message, and go on with the others.
                self.inboxes.apply(openid, methodcaller("unpushable", question.id))
                continue
            text, after = inbox.render_push(question, answer, now)
            # (At most AFTER_REPLY: the reply's time is another host's clock.)
            announced = question.announced_at or 0.0
            time.sleep(min(AFTER_REPLY, max(0.0, announced + AFTER_REPLY - time.time())))
            try:
                self.pusher.send(openid, text)
            except PushError as exc:
                self.inboxes.apply(openid, methodcaller("release", owner, time.time(), exc.reason))
                return
            if not self.inboxes.apply(openid, methodcaller("pushed", owner, question, after, time.time())):
                return


def make_pusher(config, store, keys, metrics) -> Pusher | None:
    return Pusher(config, store, keys, metrics) if config.MPBOT_PUSH else None
