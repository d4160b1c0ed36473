"""The admin's tools against the running app: `mpbot chat`, `mpbot check`, `mpbot stats`, /metrics."""

import os
import re
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, SECRET, TOKEN
from fakes import Rule, free_port

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx0123456789abcdef"


def mpbot(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m mpbot ...`` as an admin runs it, with only the given settings in its environment."""
    clean = {name: value for name, value in os.environ.items() if not name.isupper() or name in ("PATH", "HOME")}
    return subprocess.run(
        [sys.executable, "-m", "mpbot", *args],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": ROOT, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def chat(bot, *args: str, **env) -> subprocess.CompletedProcess:
    return mpbot("chat", "--url", f"{bot.url}/wechat", "--token", TOKEN, "--wechat-timeout", "1", *args, env=env)


def metrics(url: str, **headers) -> dict:
    response = requests.get(f"{url}/metrics", headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


# --- mpbot chat --------------------------------------------------------------------------------


@pytest.mark.slow
def test_chat_send_shows_each_delivery_and_the_reply_and_exits_0(bot, fake_llm):
    assert chat(bot, "--send", "/chatgpt", "--user", "admin").returncode == 0
    fake_llm.rules["慢一点"] = Rule(latency=1.4, content="**慢**的回答，[链接](https://example.com)")
    done = chat(bot, "--send", "慢一点", "--user", "admin")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("  delivery 1/3: silent for 1.0 s")
    assert lines[1].startswith("  delivery 2/3: answered in")
    assert lines[2].startswith("bot (") and lines[2].endswith("> 慢的回答，链接 (https://example.com)")
    assert fake_llm.calls_for("慢一点") == 1


@pytest.mark.slow
def test_chat_reads_messages_one_per_line(bot, fake_llm):
    result = subprocess.run(
        [sys.executable, "-m", "mpbot", "chat", "--url", f"{bot.url}/wechat", "--token", TOKEN, "--user", "piped"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        input="/chatgpt\n你好\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    assert "you> 你好\n  delivery 1/3: answered in" in result.stdout
    assert result.stdout.rstrip().endswith("> 答：你好\nyou>")


@pytest.mark.slow
def test_chat_speaks_safe_mode(make_bot, fake_llm):
    bot = make_bot(aes_key=AES_KEY, appid=APPID)
    args = ("--aes-key", AES_KEY, "--appid", APPID, "--send")
    assert "对话已开始" in chat(bot, *args, "/chatgpt").stdout
    result = chat(bot, *args, "加密的问题")
    assert result.returncode == 0 and result.stdout.rstrip().endswith("> 答：加密的问题")


@pytest.mark.slow
def test_chat_shows_wechats_error_when_the_bot_fails_and_exits_1(bot):
    result = mpbot("chat", "--url", f"{bot.url}/wechat", "--token", "wrongtoken", "--send", "你好")
    assert result.returncode == 1
    assert "HTTP 403: WeChat shows its error" in result.stdout
    assert "该公众号提供的服务出现故障" in result.stdout


@pytest.mark.slow
def test_chat_says_when_no_bot_is_there_and_exits_2():
    result = mpbot("chat", "--url", f"http://127.0.0.1:{free_port()}/wechat", "--token", TOKEN, "--send", "你好")
    assert result.returncode == 2
    assert "cannot reach" in result.stderr and "is the bot running?" in result.stderr
    odd = mpbot("chat", "--url", "file:///etc/passwd", "--token", TOKEN, "--send", "你好")
    assert odd.returncode == 2 and "not an http(s) URL" in odd.stderr and "Traceback" not in odd.stderr


# --- mpbot check -------------------------------------------------------------------------------


@pytest.mark.slow
def test_check_passes_on_a_good_setup(make_bot, mode, worker_env):
    bot = make_bot()
    env = {**worker_env, "PUBLIC_URL": bot.url, "PORT": bot.url.rsplit(":", 1)[1]}
    if mode == "embedded":
        env["REDIS_URL"] = ""
    result = mpbot("check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line[5:].split()[0]: line for line in result.stdout.splitlines()}
    assert lines["token"].startswith("OK") and lines["model"].startswith("OK")
    assert "answered a one-token request" in lines["model"]
    assert lines["pictures"].startswith("OK") and "took a test picture" in lines["pictures"], lines["pictures"]
    assert lines["voice"].startswith("INFO") and "set WECHAT_APPID and WECHAT_APPSECRET" in lines["voice"]
    # A loopback address is no place for subscribers' phones; the bot does answer here.
    assert lines["public"].startswith("WARN") and "is not on the internet" in lines["public"], lines["public"]
    assert lines["running"].startswith("OK"), lines["running"]
    if mode == "redis":
        assert lines["redis"].startswith("OK")
        assert re.search(r"reachable and takes writes, redis \d+\.\d+", lines["redis"])
        assert lines["workers"].startswith("OK   workers    4 RQ workers")


@pytest.mark.slow
def test_check_from_a_bare_clone_says_in_order_what_is_missing(tmp_path):
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), "PYTHONPATH": ROOT}
    clean["PORT"] = str(free_port())  # nothing listens there
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mpbot", "check"], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60
    )
    assert time.monotonic() - started < 15
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    items = [line[5:].split()[0] for line in lines]
    assert items[0] == "token" and lines[0].startswith("FAIL") and "make run" in lines[0]
    assert items.index("model") < items.index("running") < items.index("public") < items.index("console")
    model, running = lines[items.index("model")], lines[items.index("running")]
    assert model.startswith("FAIL") and "set OPENAI_API_KEY" in model
    assert running.startswith("FAIL") and "start the bot (`make run`)" in running
    assert items[-1] == "console" and "URL http://127.0.0.1:8000/wechat" in lines[-1]
    assert items[-2] == "replies" and "import-rules" in lines[-2], "developer mode turned the console's rules off"
    assert items[-3] == "capacity" and "messages/s at 6.5 s per answer" in lines[-3]


@pytest.mark.slow
def test_check_names_every_broken_item_and_its_fix(mode):
    dead = f"127.0.0.1:{free_port()}"
    env = {
        "WECHAT_TOKEN": "ab",
        "SECRET_KEY": SECRET,
        "OPENAI_BASE_URL": f"http://{dead}/v1",
        "PUBLIC_URL": f"http://{dead}",
        "REDIS_URL": f"redis://{dead}/0" if mode == "redis" else "",
    }
    started = time.monotonic()
    result = mpbot("check", env=env)
    assert time.monotonic() - started < 20
    assert result.returncode == 1
    lines = {line[5:].split()[0]: line for line in result.stdout.splitlines()}
    assert lines["token"].startswith("FAIL") and "3-32 letters or digits" in lines["token"]
    assert lines["model"].startswith("FAIL") and "nothing answers at OPENAI_BASE_URL" in lines["model"]
    assert lines["public"].startswith("WARN") and "set PUBLIC_URL" in lines["public"]
    assert lines["running"].startswith("FAIL") and "start the bot" in lines["running"]
    if mode == "redis":
        assert lines["redis"].startswith("FAIL") and "start Redis or fix REDIS_URL" in lines["redis"]


@pytest.mark.slow
def test_check_never_prints_the_models_credentials():
    dead = f"127.0.0.1:{free_port()}"
    env = {"WECHAT_TOKEN": TOKEN, "OPENAI_API_KEY": "sk-very-secret", "OPENAI_BASE_URL": f"http://me:pw@{dead}/v1"}
    result = mpbot("check", env={**env, "PUBLIC_URL": f"http://{dead}"})
    assert "model" in result.stdout and f"***@{dead.split(':')[0]}" in result.stdout
    assert "pw" not in result.stdout.replace("public url", "") and "sk-very-secret" not in result.stdout


@pytest.mark.slow
def test_check_explains_settings_it_cannot_load():
    result = mpbot("check", env={"WECHAT_TOKEN": "abc123", "MPBOT_LLM_TIMEOUT": "soon"})
    assert result.returncode == 1 and "MPBOT_LLM_TIMEOUT='soon' is not valid" in result.stderr


# --- /metrics and mpbot stats -----------------------------------------------------------------


@pytest.mark.slow
def test_metrics_count_a_fast_and_a_slow_message(bot, fake_llm, mode, worker_env):
    bot.say("/chatgpt")
    fake_llm.rules["快"] = Rule(latency=0.1)
    fake_llm.rules["慢"] = Rule(latency=3.2)
    fake_llm.rules["坏"] = Rule(status=400)
    assert bot.say("快") == "答：快"
    fallback = bot.say("慢")
    assert "回答还在生成中" in fallback
    time.sleep(0.8)  # the slow one is done by now
    assert bot.say("继续") == "关于「慢」：\n\n答：慢"
    assert "回答出错" in bot.say("坏")
    link = fallback.split('href="')[1].split('"')[0].replace("https://bot.example.com", bot.url)
    assert requests.get(link, timeout=5).status_code == 200

    figures = metrics(bot.url)
    deliveries = "mpbot_deliveries_total"

    def delivered(outcome, n):
        return figures.get((deliveries, (("delivery", str(n)), ("outcome", outcome))), 0)

    assert delivered("reply", 1) == 1
    assert delivered("answered", 1) == 1
    assert delivered("silent", 1) == delivered("silent", 2) == 1
    assert delivered("fallback", 3) == 1
    assert delivered("fetched", 1) == 1
    assert delivered("error", 1) == 1
    assert figures[("mpbot_llm_seconds_count", ())] == 2
    assert figures[("mpbot_llm_seconds_bucket", (("le", "0.5"),))] == 1
    assert figures[("mpbot_llm_seconds_bucket", (("le", "5.0"),))] == 2
    assert figures[("mpbot_llm_errors_total", (("kind", "bad_request"),))] == 1
    assert figures[("mpbot_sessions_started_total", ())] == 1
    assert figures[("mpbot_pages_viewed_total", (("page", "answer"),))] == 1
    assert figures[("mpbot_answers_in_flight", (("state", "running"),))] == 0

    env = {**worker_env, **({"REDIS_URL": ""} if mode == "embedded" else {})}
    args = ("--url", f"{bot.url}/metrics") if mode == "embedded" else ()
    table = mpbot("stats", *args, env=env)
    assert table.returncode == 0, table.stderr
    rows = dict(line.split("  ", 1) for line in table.stdout.splitlines() if not line.startswith(" "))
    assert rows["deliveries"].strip() == "7"
    assert rows["answered in the window"].strip() == "33.3% of questions"
    assert rows["model errors"].strip() == "bad_request 1"
    if mode == "redis":
        assert rows["RQ"].strip().startswith("4 workers")


def test_metrics_from_several_web_processes_add_up(make_bot, mode):
    if mode == "embedded":
        pytest.skip("embedded mode is one process by design")
    first, second = make_bot(), make_bot()
    first.say("/chatgpt")
    second.say("/help")
    assert metrics(first.url) == metrics(second.url)
    assert metrics(first.url)[("mpbot_deliveries_total", (("delivery", "1"), ("outcome", "reply")))] == 2


def test_metrics_can_require_a_bearer_token(make_bot):
    bot = make_bot(MPBOT_METRICS_TOKEN="metrics-secret")
    assert requests.get(f"{bot.url}/metrics", timeout=5).status_code == 403
    wrong = requests.get(f"{bot.url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 403
    figures = metrics(bot.url, Authorization="Bearer metrics-secret")
    assert ("mpbot_answers_in_flight", (("state", "running"),)) in figures


@pytest.mark.slow
def test_check_reads_the_settings_file_the_services_read(tmp_path):
    settings = tmp_path / "mpbot.env"
    settings.write_text("WECHAT_TOKEN=fromthefile123\nOPENAI_BASE_URL=http://127.0.0.1:9/v1\n")
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), "PYTHONPATH": ROOT}
    result = subprocess.run(
        [sys.executable, "-m", "mpbot", "check"],
        cwd=tmp_path / "..",
        env={**clean, "MPBOT_ENV_FILE": str(settings), "PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=60,
    )
    token = next(line for line in result.stdout.splitlines() if line[5:].startswith("token"))
    assert token.startswith("OK") and "(14 characters)" in token, result.stdout + result.stderr
