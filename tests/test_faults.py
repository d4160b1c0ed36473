"""Redis unreachable, forged links: answered clearly and fast, never a 5xx."""

import shutil
import subprocess
import time

import pytest
import requests

from conftest import FAST, SHARED
from fakes import WeChat, free_port, serve, text_xml
from mpbot.web import create_app


@pytest.fixture
def own_redis():
    """A redis-server this test may stop and start."""
    port = free_port()

    def start():
        return subprocess.Popen(
            [
                shutil.which("redis-server"),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )

    holder = {"process": start()}
    time.sleep(0.3)
    holder["url"] = f"redis://127.0.0.1:{port}/0"
    holder["start"] = lambda: holder.update(process=start()) or time.sleep(0.3)
    yield holder
    holder["process"].terminate()
    holder["process"].wait(5)


def test_redis_down_gives_an_apology_and_a_503_health_then_recovers(own_redis, fake_llm, fake_llm_server, caplog):
    app = create_app({**SHARED, **FAST, "REDIS_URL": own_redis["url"], "OPENAI_BASE_URL": fake_llm_server[1]})
    url, server = serve(app)
    wechat = WeChat(url, SHARED["WECHAT_TOKEN"], timeout=1.0)
    try:
        assert "对话已开始" in wechat.say("/chatgpt")
        own_redis["process"].terminate()
        own_redis["process"].wait(5)

        started = time.monotonic()
        response = wechat.post(text_xml("还在吗", wechat.new_msgid()))
        assert response.status_code == 200
        assert "稍后再试" in wechat.reply_text(response.text)
        assert time.monotonic() - started < 1.0
        assert any("store unreachable" in r.message for r in caplog.records)

        health = requests.get(f"{url}/healthz", timeout=5)
        assert health.status_code == 503 and "Redis" in health.text

        own_redis["start"]()
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        # A Redis without persistence lost the session: the subscriber starts again, normally.
        assert "/chatgpt" in wechat.say("还在吗")
    finally:
        server.shutdown()
        server.server_close()
        app.mpbot.close()
