"""Shared state: delivery counts, answers, sessions and their history.

Two stores with one interface: ``RedisStore`` (many processes and hosts) and ``MemoryStore``
(embedded mode, one process). Every key is named in ``keys.py`` and written with a TTL.

An answer is a small stream of events per MsgId (see ``answers.py``). Readers read the stream
without consuming it, from a cursor, so any number of deliveries and pages, on any process, see
the same answer grow. Each subscriber also has one small JSON document (see ``reader.py``),
changed only through ``update_reader``, atomically.
"""

import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .answers import FINAL, Answer, fold
from .errors import StoreError
from .keys import Keys

START = "0-0"  # the cursor before the first event


def _new_sid() -> str:
    return secrets.token_urlsafe(12)


class RedisStore:
    # GETEX renews the session; its history slides with it.
    _TOUCH = """
    local sid = redis.call('GETEX', KEYS[1], 'EX', ARGV[1])
    if sid then redis.call('EXPIRE', ARGV[2] .. sid, ARGV[1]) end
    return sid
    """
    # /clear: the session gets a new id, so a job still writing to the old history cannot bring
    # it back; the old history is dropped.
    _RENEW = """
    local old = redis.call('GET', KEYS[1])
    if not old then return false end
    redis.call('DEL', ARGV[2] .. old)
    redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[1])
    return old
    """
    _DELETE_IF = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
    return 0
    """
    _END = """
    local sid = redis.call('GET', KEYS[1])
    if not sid then return false end
    redis.call('DEL', KEYS[1], ARGV[1] .. sid)
    return sid
    """

    def __init__(self, config) -> None:
        self.keys = Keys(config.MPBOT_KEY_PREFIX)
        self.answer_ttl = int(config.MPBOT_ANSWER_TTL)
        self.session_ttl = int(config.MPBOT_SESSION_TTL)
        self.event_ttl = int(config.MPBOT_EVENT_TTL)
        self.metrics_ttl = int(config.MPBOT_METRICS_TTL)
        common = dict(
            socket_connect_timeout=1.0,
            # Longer than the longest blocking read (a delivery's wait), so a read never times
            # out before Redis answers; a dead server is still noticed within it.
            socket_timeout=config.MPBOT_WECHAT_TIMEOUT + 5,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )
        pool = redis.BlockingConnectionPool.from_url(
            config.REDIS_URL,
            max_connections=config.MPBOT_REDIS_MAX_CONNECTIONS,
            timeout=2,
            decode_responses=True,
            **common,
        )
        self.redis = redis.Redis(connection_pool=pool)
        # RQ wants bytes back; it gets its own client on the same server.
        self.rq_redis = redis.Redis.from_url(config.REDIS_URL, **common)
        self._history_prefix = self.keys.history("")
        self._touch = self.redis.register_script(self._TOUCH)
        self._renew = self.redis.register_script(self._RENEW)
        self._end = self.redis.register_script(self._END)
        self._delete_if = self.redis.register_script(self._DELETE_IF)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise StoreError(f"Redis: {exc.__class__.__name__}: {exc}") from exc

    def ping(self) -> str:
        info = self._call(self.redis.info, "server")
        self._call(self.redis.set, self.keys.health(), "1", ex=60)
        return f"redis {info.get('redis_version', '?')}"

    def count_delivery(self, msgid: str) -> int:
        key = self.keys.deliveries(msgid)
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, self.answer_ttl)
        return self._call(pipe.execute)[0]

    def publish(self, msgid: str, event: dict[str, Any]) -> None:
        key = self.keys.answer(msgid)
        pipe = self.redis.pipeline()
        pipe.xadd(key, {"e": json.dumps(event, ensure_ascii=False)})
        pipe.expire(key, self.answer_ttl)
        self._call(pipe.execute)

    def read(self, msgid: str, after: str = START, timeout: float = 0) -> tuple[list[dict[str, Any]], str]:
        """The events of ``msgid`` after the cursor ``after``, and the cursor past them. With a
        ``timeout``, blocks (XREAD BLOCK, no polling) until at least one exists or time is up."""
        key = self.keys.answer(msgid)
        if timeout > 0:
            reply = self._call(self.redis.xread, {key: after}, block=max(int(timeout * 1000), 1))
            entries = reply[0][1] if reply else []
        else:
            entries = self._call(self.redis.xrange, key, "-" if after == START else f"({after}", "+")
        if entries:
            after = entries[-1][0]
        return [json.loads(fields["e"]) for _id, fields in entries], after

    def wait(self, msgid: str, timeout: float) -> dict[str, Any] | None:
        """The final event of ``msgid``: at once if it exists, else as soon as it is published,
        or None after ``timeout`` seconds."""
        return _wait_final(self, msgid, timeout)

    def answer(self, msgid: str) -> Answer:
        return fold(self.read(msgid)[0])

    def reader(self, openid: str) -> dict[str, Any] | None:
        raw = self._call(self.redis.get, self.keys.reader(openid))
        return json.loads(raw) if raw else None

    def update_reader(self, openid: str, change: Callable[[dict[str, Any]], Any]) -> Any:
        """Run ``change`` on the subscriber's document and save it, atomically (WATCH/MULTI: on a
        concurrent write it runs again on the new document, so it must not have side effects)."""
        key = self.keys.reader(openid)

        def transaction(pipe):
            raw = pipe.get(key)
            state = json.loads(raw) if raw else {}
            result = change(state)
            pipe.multi()
            pipe.set(key, json.dumps(state, ensure_ascii=False), ex=self.answer_ttl)
            return result

        return self._call(self.redis.transaction, transaction, key, value_from_callable=True)

    def take_rate(self, openid: str, window: int) -> int:
        """Count one question in the subscriber's current window; the count so far."""
        key = self.keys.rate(openid)
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, window, nx=True)
        return self._call(pipe.execute)[0]

    def add_metrics(self, amounts: dict[str, float]) -> None:
        key = self.keys.metrics()
        pipe = self.redis.pipeline(transaction=False)
        for name, amount in amounts.items():
            pipe.hincrbyfloat(key, name, amount)
        pipe.expire(key, self.metrics_ttl)
        self._call(pipe.execute)

    def metrics(self) -> dict[str, float]:
        return {name: float(value) for name, value in self._call(self.redis.hgetall, self.keys.metrics()).items()}

    def touch_session(self, openid: str) -> str | None:
        return self._call(self._touch, keys=[self.keys.session(openid)], args=[self.session_ttl, self._history_prefix])

    def start_session(self, openid: str) -> bool:
        """Start a session; False when one is already going (it is renewed)."""
        created = self._call(self.redis.set, self.keys.session(openid), _new_sid(), nx=True, ex=self.session_ttl)
        if not created:
            self.touch_session(openid)
        return bool(created)

    def clear_history(self, openid: str) -> bool:
        old = self._call(
            self._renew, keys=[self.keys.session(openid)], args=[self.session_ttl, self._history_prefix, _new_sid()]
        )
        return bool(old)

    def end_session(self, openid: str) -> bool:
        return bool(self._call(self._end, keys=[self.keys.session(openid)], args=[self._history_prefix]))

    def history(self, sid: str) -> list[dict[str, str]]:
        return [json.loads(turn) for turn in self._call(self.redis.lrange, self.keys.history(sid), 0, -1)]

    def append_turn(self, sid: str, question: str, answer: str, max_turns: int) -> None:
        key = self.keys.history(sid)
        pipe = self.redis.pipeline()
        pipe.rpush(key, json.dumps({"q": question, "a": answer}, ensure_ascii=False))
        pipe.ltrim(key, -max_turns, -1)
        pipe.expire(key, self.session_ttl)
        self._call(pipe.execute)

    def first_time(self, openid: str, create_time: str) -> bool:
        """True the first time an event (FromUserName + CreateTime) is seen."""
        return bool(self._call(self.redis.set, self.keys.event(openid, create_time), "1", nx=True, ex=self.event_ttl))

    # --- small shared values (the access_token, its lock, push state; see push.py) -------------

    def get_value(self, key: str) -> str | None:
        return self._call(self.redis.get, key)

    def set_value(self, key: str, value: str, ttl: float, only_new: bool = False) -> bool:
        """Set ``key`` for ``ttl`` seconds; with ``only_new``, only if it does not exist (a lock).
        Whether it was set."""
        return bool(self._call(self.redis.set, key, value, px=max(1, int(ttl * 1000)), nx=only_new))

    def delete_value(self, key: str, value: str) -> None:
        """Delete ``key`` if it still holds ``value`` (a lock released by its holder only)."""
        self._call(self._delete_if, keys=[key], args=[value])

    def count_value(self, key: str, ttl: float) -> int:
        """Add one to the counter ``key`` (kept ``ttl`` seconds from its first count)."""
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, int(ttl), nx=True)
        return self._call(pipe.execute)[0]

    def close(self) -> None:
        # A client given its pool leaves the pool open on close(); disconnect it ourselves.
        self.redis.connection_pool.disconnect()
        self.rq_redis.close()


class MemoryStore:
    """The same store in this process's memory, for embedded mode. Expired entries are dropped
    when read and swept every few hundred writes, so memory stays bounded by the TTLs."""

    def __init__(self, config) -> None:
        self.keys = Keys(config.MPBOT_KEY_PREFIX)
        self.answer_ttl = config.MPBOT_ANSWER_TTL
        self.session_ttl = config.MPBOT_SESSION_TTL
        self.event_ttl = config.MPBOT_EVENT_TTL
        self._data: dict[tuple, tuple[Any, float]] = {}
        self._lock = threading.RLock()
        # One condition per MsgId being waited on, so a published answer wakes only its waiters.
        self._waiting: dict[str, tuple[threading.Condition, int]] = {}
        self._writes = 0
        # Counters live as long as the process (a restart resets them, which Prometheus expects).
        self._metrics: dict[str, float] = {}

    def _get(self, key: tuple) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self._data[key]
            return None
        return item[0]

    def _set(self, key: tuple, value: Any, ttl: float) -> None:
        self._data[key] = (value, time.monotonic() + ttl)
        self._writes += 1
        if self._writes % 500 == 0:
            now = time.monotonic()
            for stale in [k for k, (_, expires) in self._data.items() if expires <= now]:
                del self._data[stale]

    def ping(self) -> str:
        return "in-memory (embedded mode)"

    def count_delivery(self, msgid: str) -> int:
        with self._lock:
            n = (self._get(("n", msgid)) or 0) + 1
            self._set(("n", msgid), n, self.answer_ttl)
            return n

    def publish(self, msgid: str, event: dict[str, Any]) -> None:
        with self._lock:
            events = self._get(("a", msgid)) or []
            self._set(("a", msgid), [*events, event], self.answer_ttl)
            if msgid in self._waiting:
                self._waiting[msgid][0].notify_all()

    def read(self, msgid: str, after: str = START, timeout: float = 0) -> tuple[list[dict[str, Any]], str]:
        start = 0 if after == START else int(after)
        deadline = time.monotonic() + timeout
        with self._lock:
            condition, count = self._waiting.get(msgid) or (threading.Condition(self._lock), 0)
            self._waiting[msgid] = (condition, count + 1)
            try:
                while True:
                    events = (self._get(("a", msgid)) or [])[start:]
                    remaining = deadline - time.monotonic()
                    if events or remaining <= 0:
                        return list(events), str(start + len(events))
                    condition.wait(remaining)
            finally:
                condition, count = self._waiting[msgid]
                if count == 1:
                    del self._waiting[msgid]
                else:
                    self._waiting[msgid] = (condition, count - 1)

    def wait(self, msgid: str, timeout: float) -> dict[str, Any] | None:
        return _wait_final(self, msgid, timeout)

    def answer(self, msgid: str) -> Answer:
        return fold(self.read(msgid)[0])

    def reader(self, openid: str) -> dict[str, Any] | None:
        with self._lock:
            state = self._get(("r", openid))
            return json.loads(state) if state else None

    def update_reader(self, openid: str, change: Callable[[dict[str, Any]], Any]) -> Any:
        with self._lock:
            raw = self._get(("r", openid))
            state = json.loads(raw) if raw else {}
            result = change(state)
            # Stored as JSON, as in Redis, so no caller can keep a reference into it.
            self._set(("r", openid), json.dumps(state), self.answer_ttl)
            return result

    def take_rate(self, openid: str, window: int) -> int:
        with self._lock:
            n = (self._get(("rate", openid)) or 0) + 1
            if n == 1:
                self._set(("rate", openid), n, window)
            else:
                self._data[("rate", openid)] = (n, self._data[("rate", openid)][1])
            return n

    def add_metrics(self, amounts: dict[str, float]) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self._metrics[name] = self._metrics.get(name, 0) + amount

    def metrics(self) -> dict[str, float]:
        with self._lock:
            return dict(self._metrics)

    def touch_session(self, openid: str) -> str | None:
        with self._lock:
            sid = self._get(("s", openid))
            if sid is not None:
                self._set(("s", openid), sid, self.session_ttl)
                history = self._get(("h", sid))
                if history is not None:
                    self._set(("h", sid), history, self.session_ttl)
            return sid

    def start_session(self, openid: str) -> bool:
        with self._lock:
            if self.touch_session(openid) is not None:
                return False
            self._set(("s", openid), _new_sid(), self.session_ttl)
            return True

    def clear_history(self, openid: str) -> bool:
        with self._lock:
            old = self._get(("s", openid))
            if old is None:
                return False
            self._data.pop(("h", old), None)
            self._set(("s", openid), _new_sid(), self.session_ttl)
            return True

    def end_session(self, openid: str) -> bool:
        with self._lock:
            sid = self._get(("s", openid))
            if sid is None:
                return False
            self._data.pop(("s", openid), None)
            self._data.pop(("h", sid), None)
            return True

    def history(self, sid: str) -> list[dict[str, str]]:
        with self._lock:
            return list(self._get(("h", sid)) or [])

    def append_turn(self, sid: str, question: str, answer: str, max_turns: int) -> None:
        with self._lock:
            turns = [*(self._get(("h", sid)) or []), {"q": question, "a": answer}]
            self._set(("h", sid), turns[-max_turns:], self.session_ttl)

    def first_time(self, openid: str, create_time: str) -> bool:
        with self._lock:
            if self._get(("e", openid, create_time)) is not None:
                return False
            self._set(("e", openid, create_time), True, self.event_ttl)
            return True

    def get_value(self, key: str) -> str | None:
        with self._lock:
            return self._get(("v", key))

    def set_value(self, key: str, value: str, ttl: float, only_new: bool = False) -> bool:
        with self._lock:
            if only_new and self._get(("v", key)) is not None:
                return False
            self._set(("v", key), value, ttl)
            return True

    def delete_value(self, key: str, value: str) -> None:
        with self._lock:
            if self._get(("v", key)) == value:
                del self._data[("v", key)]

    def count_value(self, key: str, ttl: float) -> int:
        with self._lock:
            item = self._get(("v", key))
            if item is None:
                self._set(("v", key), 1, ttl)
                return 1
            self._data[("v", key)] = (item + 1, self._data[("v", key)][1])
            return item + 1

    def close(self) -> None:
        pass


def _wait_final(store, msgid: str, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    cursor = START
    while True:
        events, cursor = store.read(msgid, cursor, deadline - time.monotonic())
        for event in events:
            if event.get("state") in FINAL:
                return event
        if time.monotonic() >= deadline:
            return None


def make_store(config):
    return MemoryStore(config) if config.embedded else RedisStore(config)
