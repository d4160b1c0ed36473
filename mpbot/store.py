"""Shared state: the primitives mpbot keeps its state with, in Redis or in this process's memory.

``Store`` names them; ``RedisStore`` (many processes and hosts) and ``MemoryStore`` (embedded
mode, one process) implement them, and ``tests/test_store.py`` holds both to one contract. The
stores know nothing of answers, sessions or subscribers: the modules that own those (``answers``,
``sessions``, ``reader``, ``push``, ``metrics``, ``window``, ``bot``) name their keys in
``keys.py`` and give each one its TTL here. Every write takes a TTL.

Errors: a store that cannot be reached, or answers badly, raises ``StoreError``.
"""

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import StoreError
from .green import store_deadline

START = "0-0"  # the cursor before a stream's first event
T = TypeVar("T")


class Store(Protocol):
    def ping(self) -> str:
        """What the store is (its version), or StoreError."""

    # --- small values ----------------------------------------------------------------------

    def get(self, key: str, renew: float | None = None) -> str | None:
        """The value of ``key``; with ``renew``, its TTL starts again at that many seconds."""

    def set(self, key: str, value: str, ttl: float, only_new: bool = False) -> bool:
        """Set ``key``; with ``only_new``, only if it does not exist (a lock, a first time).
        Whether it was set."""

    def swap(self, key: str, value: str, ttl: float) -> str | None:
        """Replace the value of ``key`` if it exists; the old value (None: nothing was set)."""

    def pop(self, key: str) -> str | None:
        """Delete ``key``; the value it had."""

    def delete(self, *keys: str) -> None: ...

    def delete_if(self, key: str, value: str) -> bool:
        """Delete ``key`` if it holds ``value`` (a lock released by its holder only)."""

    def expire(self, key: str, ttl: float) -> bool:
        """Start the TTL of ``key`` again; whether it exists."""

    def incr(self, key: str, ttl: float) -> int:
        """Add one to the counter ``key``, kept ``ttl`` seconds from its first count; the count."""

    # --- a document changed atomically -----------------------------------------------------

    def update(self, key: str, change: Callable[[str | None], tuple[str, float, T]]) -> T:
        """Replace the value of ``key`` (None if absent) with what ``change`` makes of it, kept
        for the TTL ``change`` gives, atomically, and return what else ``change`` returned. On a
        concurrent write ``change`` runs again on the new value, so it must have no side effects."""

    # --- a stream of events ----------------------------------------------------------------

    def append(self, key: str, event: dict[str, Any], ttl: float) -> None: ...

    def read(self, key: str, after: str = START, timeout: float = 0) -> tuple[list[dict[str, Any]], str]:
        """The events after the cursor ``after``, and the cursor past them. With a ``timeout``,
        waits (no polling) until at least one exists or time is up."""

    # --- a list, and a hash of counters ----------------------------------------------------

    def push(self, key: str, item: str, ttl: float, keep: int) -> None:
        """Append ``item``, keeping the last ``keep`` items."""

    def items(self, key: str) -> list[str]: ...

    def add(self, key: str, amounts: dict[str, float], ttl: float) -> None:
        """Add to named counters kept together under ``key``."""

    def counters(self, key: str) -> dict[str, float]: ...

    def healthy(self, key: str) -> bool:
        """Whether the store takes a write (of ``key``, kept a minute) within a second."""

    def close(self) -> None: ...


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisStore:
    _DELETE_IF = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
    return 0
    """
    # Set KEYS[1] to ARGV[3] for ARGV[4] ms if it still holds ARGV[2] (ARGV[1] "1") or is still
    # absent (ARGV[1] "0"); 1 if it did.
    _SWAP_IF = """
    local current = redis.call('GET', KEYS[1])
    if ARGV[1] == '1' then
      if current ~= ARGV[2] then return 0 end
    elseif current then
      return 0
    end
    redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
    return 1
    """

    # A blocking read (a delivery waiting for its answer) asks Redis in slices this long, so that
    # a Redis that stops answering is noticed within a slice, not at the end of the wait.
    BLOCK_SLICE = 0.5
    # How long past its end a waiting read may take before it is cut (under gevent).
    READ_GRACE = 0.3

    def __init__(self, config) -> None:
        timeout = config.MPBOT_REDIS_TIMEOUT
        # A Redis that stalls for up to twice the timeout still answers (a blocking read sent
        # during the stall waits for it, then for its slice); one that hangs (stopped, not
        # refusing) fails a command within 2 x timeout + one slice and is not asked again (a
        # dropped connection is: Redis restarted), so a delivery answers with an apology while
        # WeChat still waits.
        pool = redis.BlockingConnectionPool.from_url(
            config.REDIS_URL,
            max_connections=config.MPBOT_REDIS_MAX_CONNECTIONS,
            timeout=2,
            decode_responses=True,
            socket_connect_timeout=timeout,
            socket_timeout=2 * timeout + self.BLOCK_SLICE,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            health_check_interval=30,
        )
        self.redis = redis.Redis(connection_pool=pool)
        # /healthz: one try, under a second, so a load balancer's check does not hang either.
        self.probe = redis.Redis.from_url(
            config.REDIS_URL, socket_timeout=min(timeout, 0.8), socket_connect_timeout=min(timeout, 0.8), retry=None
        )
        # RQ wants bytes back: its own client, for enqueueing and reading the queue (the workers
        # block on the queue through their own connection), with the same timeouts, so that a
        # delivery that enqueues while Redis hangs still apologises in time.
        self.rq_redis = redis.Redis.from_url(
            config.REDIS_URL,
            socket_connect_timeout=timeout,
            socket_timeout=2 * timeout + self.BLOCK_SLICE,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            health_check_interval=30,
        )
        self._delete_if = self.redis.register_script(self._DELETE_IF)
        self._swap_if = self.redis.register_script(self._SWAP_IF)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise StoreError(f"Redis: {exc.__class__.__name__}: {exc}") from exc

    def _pipe(self, build: Callable[[Any], None], transaction: bool = True) -> list:
        pipe = self.redis.pipeline(transaction=transaction)
        build(pipe)
        return self._call(pipe.execute)

    def ping(self) -> str:
        info = self._call(self.redis.info, "server")
        return f"redis {info.get('redis_version', '?')}"

    def healthy(self, key: str) -> bool:
        """Whether Redis takes a write of ``key`` within a second (one try, its own connection)."""
        try:
            return bool(self.probe.set(key, "1", px=60_000))
        except redis.RedisError:
            return False

    def get(self, key: str, renew: float | None = None) -> str | None:
        if renew is None:
            return self._call(self.redis.get, key)
        return self._call(self.redis.getex, key, px=_ms(renew))

    def set(self, key: str, value: str, ttl: float, only_new: bool = False) -> bool:
        return bool(self._call(self.redis.set, key, value, px=_ms(ttl), nx=only_new))

    def swap(self, key: str, value: str, ttl: float) -> str | None:
        return self._call(self.redis.set, key, value, px=_ms(ttl), xx=True, get=True)

    def pop(self, key: str) -> str | None:
        return self._call(self.redis.getdel, key)

    def delete(self, *keys: str) -> None:
        if keys:
            self._call(self.redis.delete, *keys)

    def delete_if(self, key: str, value: str) -> bool:
        return bool(self._call(self._delete_if, keys=[key], args=[value]))

    def expire(self, key: str, ttl: float) -> bool:
        return bool(self._call(self.redis.pexpire, key, _ms(ttl)))

    def incr(self, key: str, ttl: float) -> int:
        return self._pipe(lambda pipe: pipe.incr(key).pexpire(key, _ms(ttl), nx=True))[0]

    def update(self, key: str, change: Callable[[str | None], tuple[str, float, T]]) -> T:
        # Read, change, then write only if the value is still what was read: two round trips
        # where WATCH/GET/MULTI-EXEC takes three, on every delivery's path.
        while True:
            raw = self._call(self.redis.get, key)
            value, ttl, result = change(raw)
            expected = ("1", raw) if raw is not None else ("0", "")
            if self._call(self._swap_if, keys=[key], args=[*expected, value, _ms(ttl)]):
                return result

    def append(self, key: str, event: dict[str, Any], ttl: float) -> None:
        data = {"e": json.dumps(event, ensure_ascii=False)}
        self._pipe(lambda pipe: pipe.xadd(key, data).pexpire(key, _ms(ttl)))

    def read(self, key: str, after: str = START, timeout: float = 0) -> tuple[list[dict[str, Any]], str]:
        if timeout > 0:
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                # A Redis that hangs near the end of the wait must not hold the delivery past it by
                # a whole socket timeout: the last one would miss WeChat's 5 s.
                with store_deadline(max(left, 0.0) + self.READ_GRACE, "a waiting read"):
                    reply = self._call(self.redis.xread, {key: after}, block=max(1, _ms(min(left, self.BLOCK_SLICE))))
                entries = reply[0][1] if reply else []
                if entries or left <= self.BLOCK_SLICE:
                    break
        else:
            entries = self._call(self.redis.xrange, key, "-" if after == START else f"({after}", "+")
        if entries:
            after = entries[-1][0]
        return [json.loads(fields["e"]) for _id, fields in entries], after

    def push(self, key: str, item: str, ttl: float, keep: int) -> None:
        self._pipe(lambda pipe: pipe.rpush(key, item).ltrim(key, -keep, -1).pexpire(key, _ms(ttl)))

    def items(self, key: str) -> list[str]:
        return self._call(self.redis.lrange, key, 0, -1)

    def add(self, key: str, amounts: dict[str, float], ttl: float) -> None:
        def build(pipe) -> None:
            for name, amount in amounts.items():
                pipe.hincrbyfloat(key, name, amount)
            pipe.pexpire(key, _ms(ttl))

        self._pipe(build, transaction=False)

    def counters(self, key: str) -> dict[str, float]:
        return {name: float(value) for name, value in self._call(self.redis.hgetall, key).items()}

    def close(self) -> None:
        # A client given its pool leaves the pool open on close(); disconnect it ourselves.
        self.redis.connection_pool.disconnect()
        self.rq_redis.close()
        self.probe.close()


class MemoryStore:
    """The same primitives in this process's memory, for embedded mode. Expired keys are dropped
    when read and swept every few hundred writes, so memory stays bounded by the TTLs."""

    def __init__(self, config=None) -> None:
        self._data: dict[str, tuple[Any, float]] = {}
        self._lock = threading.RLock()
        # One condition per stream being waited on, so an event wakes only that stream's readers.
        self._waiting: dict[str, tuple[threading.Condition, int]] = {}
        self._writes = 0

    def _get(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self._data[key]
            return None
        return item[0]

    def _set(self, key: str, value: Any, ttl: float) -> None:
        self._data[key] = (value, time.monotonic() + ttl)
        self._writes += 1
        if self._writes % 500 == 0:
            now = time.monotonic()
            for stale in [k for k, (_, expires) in self._data.items() if expires <= now]:
                del self._data[stale]

    def _keep(self, key: str, value: Any) -> None:
        """Change the value of an existing key, keeping its TTL."""
        self._data[key] = (value, self._data[key][1])

    def ping(self) -> str:
        return "in-memory (embedded mode)"

    def get(self, key: str, renew: float | None = None) -> str | None:
        with self._lock:
            value = self._get(key)
            if value is not None and renew is not None:
                self._set(key, value, renew)
            return value

    def set(self, key: str, value: str, ttl: float, only_new: bool = False) -> bool:
        with self._lock:
            if only_new and self._get(key) is not None:
                return False
            self._set(key, value, ttl)
            return True

    def swap(self, key: str, value: str, ttl: float) -> str | None:
        with self._lock:
            old = self._get(key)
            if old is not None:
                self._set(key, value, ttl)
            return old

    def pop(self, key: str) -> str | None:
        with self._lock:
            value = self._get(key)
            self._data.pop(key, None)
            return value

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def delete_if(self, key: str, value: str) -> bool:
        with self._lock:
            if self._get(key) != value:
                return False
            del self._data[key]
            return True

    def expire(self, key: str, ttl: float) -> bool:
        with self._lock:
            value = self._get(key)
            if value is None:
                return False
            self._set(key, value, ttl)
            return True

    def incr(self, key: str, ttl: float) -> int:
        with self._lock:
            count = self._get(key)
            if count is None:
                self._set(key, 1, ttl)
                return 1
            self._keep(key, count + 1)
            return count + 1

    def update(self, key: str, change: Callable[[str | None], tuple[str, float, T]]) -> T:
        with self._lock:
            value, ttl, result = change(self._get(key))
            self._set(key, value, ttl)
            return result

    def append(self, key: str, event: dict[str, Any], ttl: float) -> None:
        # Stored as JSON, as in Redis, so no reader can keep a reference into it.
        with self._lock:
            events = self._get(key) or []
            self._set(key, [*events, json.dumps(event)], ttl)
            if key in self._waiting:
                self._waiting[key][0].notify_all()

    def read(self, key: str, after: str = START, timeout: float = 0) -> tuple[list[dict[str, Any]], str]:
        start = (
            0 if after == START else int(after.partition("-")[0])
        )  # a count; a Redis-shaped id counts by its first part
        deadline = time.monotonic() + timeout
        with self._lock:
            condition, count = self._waiting.get(key) or (threading.Condition(self._lock), 0)
            self._waiting[key] = (condition, count + 1)
            try:
                while True:
                    events = (self._get(key) or [])[start:]
                    remaining = deadline - time.monotonic()
                    if events or remaining <= 0:
                        cursor = str(start + len(events)) if events else after
                        return [json.loads(event) for event in events], cursor
                    condition.wait(remaining)
            finally:
                condition, count = self._waiting[key]
                if count == 1:
                    del self._waiting[key]
                else:
                    self._waiting[key] = (condition, count - 1)

    def push(self, key: str, item: str, ttl: float, keep: int) -> None:
        with self._lock:
            self._set(key, [*(self._get(key) or []), item][-keep:], ttl)

    def items(self, key: str) -> list[str]:
        with self._lock:
            return list(self._get(key) or [])

    def add(self, key: str, amounts: dict[str, float], ttl: float) -> None:
        with self._lock:
            counters = dict(self._get(key) or {})
            for name, amount in amounts.items():
                counters[name] = counters.get(name, 0.0) + amount
            self._set(key, counters, ttl)

    def counters(self, key: str) -> dict[str, float]:
        with self._lock:
            return dict(self._get(key) or {})

    def healthy(self, key: str) -> bool:
        self.set(key, "1", 60)
        return True

    def close(self) -> None:
        pass


def make_store(config) -> Store:
    return MemoryStore(config) if config.embedded else RedisStore(config)
