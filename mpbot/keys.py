"""Every Redis key mpbot writes, named in one place.

All keys live under one prefix (``MPBOT_KEY_PREFIX``, default ``mpbot``). The module that owns a
key (in the last column) writes it through the store's primitives, each of which takes a TTL. RQ's
own keys (``rq:*``) are RQ's; their TTLs are set on each job (see ``jobs.py``).

| key                       | type   | holds                                       | TTL               | owner    |
|---------------------------|--------|---------------------------------------------|-------------------|----------|
| {p}:msg:{msgid}:n         | string | deliveries of one MsgId so far (a counter)  | MPBOT_ANSWER_TTL  | window   |
| {p}:msg:{msgid}:a         | stream | the answer's events: question, text, end    | MPBOT_ANSWER_TTL  | answers  |
| {p}:reader:{openid}       | string | JSON: the subscriber's inbox (inbox.dump)   | see below         | reader   |
| {p}:session:{openid}      | string | the id of the subscriber's chat session     | MPBOT_SESSION_TTL | sessions |
| {p}:history:{sid}         | list   | the session's question/answer turns (JSON)  | MPBOT_SESSION_TTL | sessions |
| {p}:msg:{msgid}:m         | string | JSON: its picture or voice (where, not what)| MPBOT_MEDIA_KEEP  | media    |
| {p}:picture:{openid}      | string | JSON: the latest picture (where, not what)  | MPBOT_PICTURE_TTL | media    |
| {p}:event:{openid}:{time} | string | an event already handled                    | MPBOT_EVENT_TTL   | bot      |
| {p}:rate:{openid}         | string | questions in the rate window (a counter)    | MPBOT_RATE_WINDOW | bot      |
| {p}:signed:{signature}    | string | digest of the message a signature came with | 2 x clock skew    | guard    |
| {p}:plaintext:refused     | string | when a signed plaintext message was refused | 1 hour            | web      |
| {p}:metrics               | hash   | counters shown at /metrics                  | MPBOT_METRICS_TTL | metrics  |
| {p}:health                | string | written by /healthz: the store writes       | 60 s              | web      |
| {p}:wx:token              | string | JSON: the shared access_token, renewal time | its expires_in-30 | push     |
| {p}:wx:token:lock         | string | held by the one process fetching a token    | API timeout + 5 s | push     |
| {p}:wx:fetches:{day}      | string | token fetches that day, Beijing time        | 2 days            | push     |
| {p}:push:off              | string | why pushing is paused for the account       | MPBOT_PUSH_PAUSE  | push     |
| {p}:push:logged:{reason}  | string | a push failure's reason was logged once     | MPBOT_PUSH_PAUSE  | push     |

A counter's TTL runs from its first count. An inbox with an answer the subscriber has not read
is kept MPBOT_ANSWER_TTL; one with nothing pending, MPBOT_SESSION_TTL (or the 76 s a MsgId's
reply is remembered, if longer).
"""


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str = "mpbot") -> None:
        self.prefix = prefix

    def deliveries(self, msgid: str) -> str:
        return f"{self.prefix}:msg:{msgid}:n"

    def answer(self, msgid: str) -> str:
        return f"{self.prefix}:msg:{msgid}:a"

    def media(self, msgid: str) -> str:
        return f"{self.prefix}:msg:{msgid}:m"

    def picture(self, openid: str) -> str:
        return f"{self.prefix}:picture:{openid}"

    def reader(self, openid: str) -> str:
        return f"{self.prefix}:reader:{openid}"

    def session(self, openid: str) -> str:
        return f"{self.prefix}:session:{openid}"

    def history(self, sid: str) -> str:
        return f"{self.prefix}:history:{sid}"

    def event(self, openid: str, create_time: str) -> str:
        return f"{self.prefix}:event:{openid}:{create_time}"

    def rate(self, openid: str) -> str:
        return f"{self.prefix}:rate:{openid}"

    def signed(self, signature: str) -> str:
        return f"{self.prefix}:signed:{signature}"

    def plaintext_refused(self) -> str:
        return f"{self.prefix}:plaintext:refused"

    def metrics(self) -> str:
        return f"{self.prefix}:metrics"

    def health(self) -> str:
        return f"{self.prefix}:health"

    def wx_token(self) -> str:
        return f"{self.prefix}:wx:token"

    def wx_token_lock(self) -> str:
        return f"{self.prefix}:wx:token:lock"

    def wx_fetches(self, day: str) -> str:
        return f"{self.prefix}:wx:fetches:{day}"

    def push_off(self) -> str:
        return f"{self.prefix}:push:off"

    def push_logged(self, reason: str) -> str:
        return f"{self.prefix}:push:logged:{reason}"

    def pattern(self) -> str:
        """Matches every key above (for tests and maintenance scripts)."""
        return f"{self.prefix}:*"
