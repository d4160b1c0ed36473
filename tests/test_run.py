"""`make run`'s command and the Procfile, as processes: gunicorn, RQ workers, the banner."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests

from conftest import ROOT
from fakes import Rule, WeChat, free_port

# The real processes.
pytestmark = pytest.mark.slow


def start(tmp_path, env):
    shutil.copy(os.path.join(ROOT, "Procfile"), tmp_path / "Procfile")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mpbot", "serve", "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ROOT, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            assert process.poll() is None, "`python -m mpbot serve` exited"
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return process, url
            except requests.RequestException:
                pass  # not listening yet, or listening before its worker has loaded the app
            assert time.monotonic() < deadline, "the bot did not come up"
            time.sleep(0.2)
    except BaseException:
        stop(process)
        raise


def stop(process) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output


@pytest.fixture
def llm_url(fake_llm, fake_llm_server):
    return fake_llm_server[1]


def test_make_run_with_nothing_configured_runs_embedded_and_prints_the_token(tmp_path, llm_url):
    process, url = start(tmp_path, {"OPENAI_BASE_URL": llm_url})
    try:
        token = (tmp_path / ".env").read_text().split("WECHAT_TOKEN=")[1].strip()
        assert oct((tmp_path / ".env").stat().st_mode)[-3:] == "600"
        wechat = WeChat(url, token)
        assert "对话已开始" in wechat.say("/chatgpt")
        assert wechat.say("你好") == "答：你好"
    finally:
        output = stop(process)
    assert f"{url}/wechat" in output
    assert token in output
    assert "embedded" in output
    assert "Warning" not in output, output
    # The default PUBLIC_URL is this machine: no subscriber's phone can open a link there.
    assert "warning: PUBLIC_URL=http://127.0.0.1:8000 is not on the internet" in output
    assert process.returncode == 0


def test_make_run_with_redis_runs_the_procfile_web_and_worker(tmp_path, llm_url, redis_url, fake_llm):
    env = {
        "OPENAI_BASE_URL": llm_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": "s" * 32,
        "WECHAT_TOKEN": "e2etoken",
        "MPBOT_RQ_WORKERS": "2",
        "MPBOT_QUEUE": f"e2e-{uuid.uuid4().hex[:8]}",
        "MPBOT_KEY_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}",
    }
    process, url = start(tmp_path, env)
    try:
        wechat = WeChat(url, "e2etoken")
        assert "对话已开始" in wechat.say("/chatgpt")
        deadline = time.monotonic() + 20
        while (reply := wechat.say("集群")) != "答：集群":  # the workers may still be starting
            assert time.monotonic() < deadline, reply
        output = stop(process)
        assert "redis://127.0.0.1" in output
        # gevent patches each web worker after the master imported redis: no warning for the admin.
        assert "Warning" not in output, output
    finally:
        if process.poll() is None:
            stop(process)
    assert not (tmp_path / ".env").exists()


def test_clients_that_connect_and_stall_take_no_answer_away(tmp_path, llm_url, fake_llm):
    """`make run` as shipped, with 1000 connections open that sent one byte (or nothing) and
    stall: a subscriber's question is still answered in the chat (gunicorn's gevent worker: a
    stalled connection is a greenlet; with gthread each held a thread, and none was answered)."""
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 1500:  # this test's own 1000 sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard) if hard != resource.RLIM_INFINITY else 4096, hard))
    process, url = start(tmp_path, {"WECHAT_TOKEN": "tok", "OPENAI_BASE_URL": llm_url, "OPENAI_API_KEY": "k"})
    stalled = []
    try:
        port = int(url.rsplit(":", 1)[1])
        for i in range(1000):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 2:
                sock.send(b"P")
            stalled.append(sock)
        wechat = WeChat(url, "tok")
        assert "对话已开始" in wechat.say("/chatgpt")
        assert wechat.say("还在吗") == "答：还在吗"
        assert requests.get(f"{url}/healthz", timeout=2).status_code == 200
    finally:
        for sock in stalled:
            sock.close()
        stop(process)


def test_answers_slow_to_render_hold_up_neither_the_process_nor_short_pages(tmp_path, llm_url, fake_llm):
    """Model text shaped to be slow to render (markdown-it takes about 1.4 s on "![" x 15,000).
    While two loads of a history page render three of them, a command answers at once and
    another subscriber's history page opens at once; a reload of the slow page is then quick."""
    process, url = start(tmp_path, {"WECHAT_TOKEN": "tok", "OPENAI_BASE_URL": llm_url, "OPENAI_API_KEY": "k"})

    def history_of(openid):
        link = re.search(r'href="(https?://[^"]+)"', wechat.say("/history", openid=openid)).group(1)
        return url + "/history/" + link.split("/history/", 1)[1]  # (PUBLIC_URL names another port)

    def timed_get(page):
        started = time.monotonic()
        assert requests.get(page, timeout=60).status_code == 200
        return time.monotonic() - started

    try:
        wechat = WeChat(url, "tok")
        for openid in ("slow", "short"):
            assert "对话已开始" in wechat.say("/chatgpt", openid=openid)
        for n in range(3):
            fake_llm.rules[f"慢渲染{n}"] = Rule(content="![" * 15000 + str(n))
            wechat.say(f"慢渲染{n}", openid="slow")
        assert wechat.say("短问题", openid="short") == "答：短问题"
        slow, short = history_of("slow"), history_of("short")
        loads = [threading.Thread(target=timed_get, args=(slow,)) for _ in range(2)]
        for load in loads:
            load.start()
        time.sleep(0.3)
        started = time.monotonic()
        assert "可用命令" in wechat.say("/help")
        assert time.monotonic() - started < 1.0, "a command waited for another request's rendering"
        assert timed_get(short) < 1.0, "a short page waited behind the slow ones"
        for load in loads:
            load.join(60)
        assert timed_get(slow) < 0.5, "a slow render was not kept"
    finally:
        stop(process)


def test_an_answer_of_markers_holds_up_no_other_subscriber(tmp_path, llm_url, fake_llm):
    """An answer that is one long line of Markdown markers ("**x " x 12,000) is made plain text
    for the chat in the web process: meanwhile another subscriber's command answers at once
    (it waited 6 s, past WeChat's 5, when emphasis was matched once per marker)."""
    process, url = start(tmp_path, {"WECHAT_TOKEN": "tok", "OPENAI_API_KEY": "k", "OPENAI_BASE_URL": llm_url})
    try:
        wechat = WeChat(url, "tok", timeout=30)
        assert "对话已开始" in wechat.say("/chatgpt")
        for marker in ("**", "~~", "__"):
            fake_llm.rules[f"标记{marker}"] = Rule(content=f"{marker}x " * 12000)
            asking = threading.Thread(target=lambda m=marker: wechat.say(f"标记{m}"))
            asking.start()
            time.sleep(1.0)
            started = time.monotonic()
            assert "可用命令" in wechat.say("/help", openid="someone-else")
            assert time.monotonic() - started < 1.0, f"{marker}: a command waited for another reply's formatting"
            asking.join(30)
    finally:
        stop(process)
