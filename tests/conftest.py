"""Fixtures: a throwaway redis-server, a fake LLM, RQ workers, and bots in both modes.

Time runs five times faster than WeChat's in these tests: a delivery is dropped after 1 s
instead of 5 s, and the last one waits 0.8 s instead of 4.5 s.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import time

import pytest
import redis

from fakes import FakeLLM, WeChat, free_port, serve
from mpbot.keys import Keys
from mpbot.web import create_app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "testtoken123"
SECRET = "test-secret-key-not-for-production"
# Settings the web side and the RQ workers share (the workers read them from the environment).
SHARED = {
    "WECHAT_TOKEN": TOKEN,
    "SECRET_KEY": SECRET,
    "OPENAI_API_KEY": "sk-test",
    "MPBOT_MODEL": "fake-model",
    "MPBOT_LLM_TIMEOUT": 20.0,
    # One retry (after 0.5 s): three, with their 0.5 + 1 + 2 s of backoff, do not fit the tests'
    # five-times-faster window; test_faults shows them with the default.
    "MPBOT_LLM_RETRIES": 1,
    "MPBOT_CONTEXT_CHARS": 200,
    "PUBLIC_URL": "https://bot.example.com",
    "MPBOT_RULES_FILE": "",  # not a rules.json an admin left in the checkout
}
SHARED_PREFIX = "mpbot"  # MPBOT_KEY_PREFIX's default: the tests' keys, deleted after each test
FAST = {"MPBOT_WECHAT_TIMEOUT": 1.0, "MPBOT_DELIVERY_WAIT": 0.8}
WECHAT_TIMEOUT = FAST["MPBOT_WECHAT_TIMEOUT"]


# Fixtures that start a process of their own (redis-server, RQ workers): whoever uses one is slow.
SLOW_FIXTURES = {"redis_url", "rq_workers", "worker_env", "push_workers", "own_redis"}


def pytest_collection_modifyitems(items):
    """``make test-fast`` leaves out the tests marked ``slow``: those that start a process, and the
    Redis runs of the tests that run in both modes (they need redis-server and RQ workers). Tests
    that open a browser or wait out WeChat's timeouts are marked where they are written."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or "redis" in params.values():
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch):
    """No setting leaks in from the machine running the tests."""
    import settings

    for name in dir(settings):
        if name.isupper():
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def redis_url():
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make test`, which installs it")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(5)


@pytest.fixture(scope="session")
def fake_llm_server():
    fake = FakeLLM()
    url = fake.start()
    yield fake, url


@pytest.fixture
def fake_llm(fake_llm_server):
    fake, _url = fake_llm_server
    fake.reset()
    yield fake
    fake.reset()


@pytest.fixture(scope="session")
def worker_env(redis_url, fake_llm_server):
    env = {name: str(value) for name, value in SHARED.items()}
    env.update(REDIS_URL=redis_url, OPENAI_BASE_URL=fake_llm_server[1])
    return env


@pytest.fixture(scope="session")
def rq_log(tmp_path_factory):
    """Where the RQ workers' log goes."""
    return tmp_path_factory.mktemp("rq") / "workers.log"


@contextlib.contextmanager
def run_workers(env: dict, count: int, log_path, queue: str = "mpbot"):
    """``python -m mpbot worker --num count`` as the Procfile starts it, with ``env`` added to
    this environment and its log in ``log_path``; yields once ``count`` workers listen on ``queue``."""
    from rq import Queue, Worker

    log = open(log_path, "w")  # closed with the workers
    process = subprocess.Popen(
        [sys.executable, "-m", "mpbot", "worker", "--num", str(count)],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": ROOT},
        stdout=log,
        stderr=log,
    )
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        deadline = time.monotonic() + 30
        while len(Worker.all(queue=Queue(queue, connection=client))) < count:
            assert process.poll() is None, "the RQ workers exited"
            assert time.monotonic() < deadline, "the RQ workers did not start"
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(15)
        client.close()
        log.close()


@pytest.fixture(scope="session")
def rq_workers(worker_env, rq_log):
    """RQ workers started as the Procfile's worker line starts them."""
    with run_workers(worker_env, 4, rq_log) as process:
        yield process


@pytest.fixture(params=["embedded", "redis"])
def mode(request):
    return request.param


@pytest.fixture
def make_bot(request, mode, fake_llm, fake_llm_server):
    """A factory: ``make_bot(**overrides)`` serves a new app and returns a WeChat pointed at it.
    Bots made in one test share the store in Redis mode (several web processes)."""
    apps, servers = [], []
    redis_url = request.getfixturevalue("redis_url") if mode == "redis" else ""
    if mode == "redis":
        request.getfixturevalue("rq_workers")

    def make(aes_key: str = "", appid: str = "", timeout: float = WECHAT_TIMEOUT, **overrides) -> WeChat:
        settings = {
            **SHARED,
            **FAST,
            "REDIS_URL": redis_url,
            "OPENAI_BASE_URL": fake_llm_server[1],
            "WECHAT_ENCODING_AES_KEY": aes_key,
            "WECHAT_APPID": appid,
            **overrides,
        }
        app = create_app(settings)
        url, server = serve(app)
        apps.append(app)
        servers.append(server)
        wechat = WeChat(url, settings["WECHAT_TOKEN"], aes_key, appid, timeout=timeout)
        wechat.app = app
        return wechat

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()
    for app in apps:
        app.mpbot.close()
    if redis_url:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(Keys(SHARED_PREFIX).pattern()):
            client.delete(key)


@pytest.fixture
def bot(make_bot):
    return make_bot()
