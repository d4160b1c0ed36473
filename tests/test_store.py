"""One contract for both stores: what mpbot's state relies on, held against Redis and against the
in-memory store alike (as cachelib and rq test their backends). Every write takes a TTL, and every
key written goes away when it ends."""

import json
import threading
import time
import uuid

import pytest

from mpbot.config import load_config
from mpbot.errors import StoreError
from mpbot.store import START, MemoryStore, RedisStore, Store

TTL = 0.2  # short, so that expiry shows within the test
GONE = 0.3  # a little longer


@pytest.fixture
def prefix():
    return f"contract-{uuid.uuid4().hex}"


@pytest.fixture(params=["memory", "redis"])
def store(request, prefix):
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("redis_url")
    store = RedisStore(load_config({"WECHAT_TOKEN": "t", "SECRET_KEY": "k", "REDIS_URL": url}))
    yield store
    store.delete(*store.redis.keys(f"{prefix}:*"))
    store.close()


@pytest.fixture
def key(prefix):
    """A new key of this test's own."""
    return lambda name="k": f"{prefix}:{uuid.uuid4().hex[:8]}:{name}"


def test_both_stores_have_every_primitive_of_the_protocol(store):
    names = [name for name in vars(Store) if not name.startswith("_")]
    assert names, "the protocol names its primitives"
    for name in names:
        assert callable(getattr(store, name)), name
    assert isinstance(store.ping(), str)


def test_a_value_is_read_back_then_expires(store, key):
    k = key()
    assert store.get(k) is None
    assert store.set(k, "值", TTL)
    assert store.get(k) == "值"
    time.sleep(GONE)
    assert store.get(k) is None


def test_set_if_new_sets_once(store, key):
    k = key()
    assert store.set(k, "first", 60, only_new=True)
    assert not store.set(k, "second", 60, only_new=True)
    assert store.get(k) == "first"
    assert store.set(k, "third", 60)
    assert store.get(k) == "third"


def test_reading_with_renew_starts_the_ttl_again(store, key):
    k = key()
    store.set(k, "v", TTL)
    time.sleep(TTL * 0.6)
    assert store.get(k, renew=TTL) == "v"
    time.sleep(TTL * 0.6)
    assert store.get(k) == "v", "renewed, so still there"
    time.sleep(GONE)
    assert store.get(k) is None


def test_expire_renews_a_key_and_says_whether_it_exists(store, key):
    k = key()
    assert not store.expire(k, 60)
    store.set(k, "v", TTL)
    assert store.expire(k, 60)
    time.sleep(GONE)
    assert store.get(k) == "v"


def test_swap_replaces_only_what_exists_and_returns_the_old_value(store, key):
    k = key()
    assert store.swap(k, "new", 60) is None
    assert store.get(k) is None, "nothing is created"
    store.set(k, "old", 60)
    assert store.swap(k, "new", TTL) == "old"
    assert store.get(k) == "new"
    time.sleep(GONE)
    assert store.get(k) is None, "with the new TTL"


def test_pop_returns_the_value_and_deletes_it(store, key):
    k = key()
    assert store.pop(k) is None
    store.set(k, "v", 60)
    assert store.pop(k) == "v"
    assert store.get(k) is None


def test_delete_removes_every_key_named(store, key):
    a, b = key("a"), key("b")
    store.set(a, "1", 60)
    store.set(b, "2", 60)
    store.delete(a, b, key("absent"))
    store.delete()
    assert store.get(a) is None and store.get(b) is None


def test_delete_if_deletes_only_for_the_holder(store, key):
    k = key()
    store.set(k, "mine", 60)
    assert not store.delete_if(k, "yours")
    assert store.get(k) == "mine"
    assert store.delete_if(k, "mine")
    assert store.get(k) is None
    assert not store.delete_if(k, "mine")


def test_a_counter_counts_and_expires_from_its_first_count(store, key):
    k = key()
    assert [store.incr(k, TTL) for _ in range(3)] == [1, 2, 3]
    time.sleep(TTL * 0.6)
    assert store.incr(k, TTL) == 4, "a later count does not start the TTL again"
    time.sleep(TTL * 0.6)
    assert store.incr(k, TTL) == 1


def test_a_counter_counts_every_concurrent_count_once(store, key):
    k = key()
    counts: list[int] = []
    threads = [threading.Thread(target=lambda: counts.extend(store.incr(k, 60) for _ in range(25))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(counts) == list(range(1, 201))


def test_update_creates_changes_and_returns_what_the_change_returned(store, key):
    k = key()
    assert store.update(k, lambda raw: ("1", 60, raw)) is None
    assert store.update(k, lambda raw: (str(int(raw) + 1), 60, "result")) == "result"
    assert store.get(k) == "2"


def test_update_is_atomic_under_concurrent_writers(store, key):
    k = key()

    def add_one(raw):
        doc = json.loads(raw) if raw else {"n": 0}
        time.sleep(0.001)  # widen the window between read and write
        doc["n"] += 1
        return json.dumps(doc), 60, doc["n"]

    def worker():
        for _ in range(10):
            store.update(k, add_one)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert json.loads(store.get(k)) == {"n": 60}


def test_update_that_raises_writes_nothing(store, key):
    k = key()
    store.set(k, "before", 60)

    def broken(raw):
        raise ValueError("no")

    with pytest.raises(ValueError):
        store.update(k, broken)
    assert store.get(k) == "before"


def test_update_sets_the_ttl(store, key):
    k = key()
    store.update(k, lambda raw: ("v", TTL, None))
    time.sleep(GONE)
    assert store.get(k) is None


def test_a_stream_is_read_from_any_cursor_without_being_consumed(store, key):
    k = key()
    assert store.read(k) == ([], START)
    store.append(k, {"state": "question", "text": "问题"}, 60)
    store.append(k, {"state": "delta", "text": "答"}, 60)
    events, cursor = store.read(k)
    assert events == [{"state": "question", "text": "问题"}, {"state": "delta", "text": "答"}]
    assert store.read(k, cursor) == ([], cursor)
    store.append(k, {"state": "done", "text": "答案"}, 60)
    assert store.read(k, cursor)[0] == [{"state": "done", "text": "答案"}]
    assert len(store.read(k)[0]) == 3, "reading consumed nothing"


def test_a_blocking_read_wakes_as_soon_as_an_event_is_appended(store, key):
    k = key()
    threading.Timer(0.2, store.append, (k, {"state": "done"}, 60)).start()
    started = time.monotonic()
    events, _ = store.read(k, START, timeout=5)
    assert events == [{"state": "done"}]
    assert time.monotonic() - started < 1.0


def test_a_blocking_read_with_nothing_new_returns_empty_after_its_timeout(store, key):
    k = key()
    store.append(k, {"state": "started"}, 60)
    _, cursor = store.read(k)
    started = time.monotonic()
    assert store.read(k, cursor, timeout=0.3) == ([], cursor)
    assert 0.25 <= time.monotonic() - started < 1.0


def test_a_stream_expires(store, key):
    k = key()
    store.append(k, {"state": "started"}, TTL)
    time.sleep(GONE)
    assert store.read(k)[0] == []


def test_a_list_keeps_its_last_items_and_expires(store, key):
    k = key()
    for n in range(5):
        store.push(k, f"item {n}", TTL, keep=3)
    assert store.items(k) == ["item 2", "item 3", "item 4"]
    time.sleep(GONE)
    assert store.items(k) == []


def test_counters_add_up_and_expire(store, key):
    k = key()
    store.add(k, {"a": 1, "b": 0.5}, TTL)
    store.add(k, {"a": 2, "c": 1}, TTL)
    assert store.counters(k) == {"a": 3.0, "b": 0.5, "c": 1.0}
    time.sleep(GONE)
    assert store.counters(k) == {}


def test_redis_that_cannot_be_reached_is_a_store_error_and_fast(free_redis_url):
    store = RedisStore(load_config({"WECHAT_TOKEN": "t", "SECRET_KEY": "k", "REDIS_URL": free_redis_url}))
    started = time.monotonic()
    for call in (lambda: store.get("k"), lambda: store.update("k", lambda raw: ("v", 60, None)), store.ping):
        with pytest.raises(StoreError, match="Redis"):
            call()
    assert time.monotonic() - started < 5
    store.close()


@pytest.fixture
def free_redis_url():
    from fakes import free_port

    return f"redis://127.0.0.1:{free_port()}/0"
