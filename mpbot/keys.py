"""Every Redis key mpbot writes, named in one place.

All keys live under one prefix (``MPBOT_KEY_PREFIX``, default ``mpbot``) and every key is written
with a TTL by the store that uses it. RQ's own keys (``rq:*``) are RQ's; their TTLs are set on
each job (see ``jobs.py``).

| key                         | type   | holds                                                   | TTL               |
|-----------------------------|--------|---------------------------------------------------------|-------------------|
| {p}:msg:{msgid}:n           | string | deliveries of one MsgId seen so far (INCR)              | MPBOT_ANSWER_TTL  |
| {p}:msg:{msgid}:a           | stream | the answer's events: question, text, end (answers.py)   | MPBOT_ANSWER_TTL  |
| {p}:reader:{openid}         | string | JSON: unread answers, question order, replies per MsgId | MPBOT_ANSWER_TTL  |
| {p}:session:{openid}        | string | the id of the subscriber's chat session                 | MPBOT_SESSION_TTL |
| {p}:history:{sid}           | list   | the session's question/answer turns (JSON)              | MPBOT_SESSION_TTL |
| {p}:event:{openid}:{time}   | string | an event already handled (FromUserName+CreateTime)      | MPBOT_EVENT_TTL   |
| {p}:rate:{openid}           | string | questions asked in the current rate window (INCR)       | MPBOT_RATE_WINDOW |
| {p}:metrics                 | hash   | counters shown at /metrics (metrics.py)                 | MPBOT_METRICS_TTL |
| {p}:health                  | string | written by /healthz to prove the store writes           | 60 s              |
| {p}:wx:token                | string | JSON: the shared access_token and when to renew it      | its expires_in-30 |
| {p}:wx:token:lock           | string | held by the one process fetching a new access_token     | API timeout + 5 s |
| {p}:wx:fetches:{day}        | string | access_token fetches on that day (Beijing time) (INCR)  | 2 days            |
| {p}:push:off                | string | why pushing is paused for the whole account             | MPBOT_PUSH_PAUSE  |
| {p}:push:logged:{reason}    | string | a push failure's reason was logged (log it once)        | MPBOT_PUSH_PAUSE  |
"""


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str = "mpbot") -> None:
        self.prefix = prefix

    def deliveries(self, msgid: str) -> str:
        return f"{self.prefix}:msg:{msgid}:n"

    def answer(self, msgid: str) -> str:
        return f"{self.prefix}:msg:{msgid}:a"

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
