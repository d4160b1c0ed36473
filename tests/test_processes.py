"""Faults on the real processes (gunicorn from the Procfile, RQ workers, redis-server), through
bench/faults.py: a web process killed between deliveries, SIGTERM mid-answer, Redis restarted,
model errors; a worker killed mid-answer; Redis paused or briefly busy under a waiting delivery."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis
import requests

from conftest import FAST, ROOT, SHARED, run_workers
from fakes import Rule, WeChat, free_port, serve, text_xml
from mpbot.web import create_app

# The real processes.
pytestmark = pytest.mark.slow


def test_fault_injection_loses_nothing_and_shows_no_wechat_error(redis_url):
    # redis_url: the session's redis-server is up, so redis-server is installed.
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "bench", "faults.py"),
            "--only",
            "llm-errors,web-restart,sigterm,redis-restart",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "answers lost 0 (target 0), duplicate model calls 0 (target 0), WeChat errors 0" in result.stdout


def test_a_worker_killed_mid_answer_has_its_job_run_again_within_seconds(
    redis_url, worker_env, fake_llm, fake_llm_server, tmp_path
):
    """SIGKILL the worker process running a job: its heartbeat lapses (MPBOT_RQ_JOB_TTL, 10 s),
    the next maintenance pass (MPBOT_RQ_MAINTENANCE, 5 s) on the other worker runs it again, and
    the answer is whole and readable within 30 s of the kill, with two model calls at most."""

    from rq import Queue, Worker
    from rq.registry import StartedJobRegistry

    queue_name = "mpbot-killed"
    env = {**worker_env, "MPBOT_QUEUE": queue_name}
    fake_llm.rules["被杀"] = Rule(latency=8, stall_calls=1, content="完整的回答。")
    with run_workers(env, 2, tmp_path / "workers.log", queue=queue_name):
        app = create_app(
            {**SHARED, **FAST, "REDIS_URL": redis_url, "MPBOT_QUEUE": queue_name, "OPENAI_BASE_URL": fake_llm_server[1]}
        )
        url, server = serve(app)
        wechat = WeChat(url, SHARED["WECHAT_TOKEN"], timeout=FAST["MPBOT_WECHAT_TIMEOUT"])
        client = redis.Redis.from_url(redis_url)
        try:
            assert "对话已开始" in wechat.say("/chatgpt", openid="killed")
            msgid = wechat.new_msgid()
            assert "回答还在生成中" in wechat.reply_text(wechat.deliver(text_xml("被杀", msgid, "killed"))[-1].body)
            queue = Queue(queue_name, connection=client)
            registry = StartedJobRegistry(queue=queue)
            ((job_id, execution_id),) = registry.get_job_and_execution_ids()
            worker_name = client.hget(f"rq:execution:{job_id}:{execution_id}", "worker_name").decode()
            victim = next(w for w in Worker.all(queue=queue) if w.name == worker_name)
            os.kill(victim.pid, signal.SIGKILL)
            killed = time.monotonic()
            final = app.mpbot.answers.wait(str(msgid), timeout=35)
            took = time.monotonic() - killed
            assert final is not None and final["state"] == "done", final
            assert took <= 30, f"the answer was whole {took:.1f} s after the kill"
            assert fake_llm.calls_for("被杀") == 2
            assert wechat.say("继续", openid="killed") == "关于「被杀」：\n\n完整的回答。"
            print(f"answer whole {took:.1f} s after the worker was killed")
        finally:
            client.close()
            server.shutdown()
            server.server_close()
            app.mpbot.close()


@pytest.fixture
def paused_redis(tmp_path, worker_env, fake_llm_server):
    """Its own redis-server (this test stops it), RQ workers and a web app on it, WeChat's timings."""
    port = free_port()
    server = subprocess.Popen(
        [
            shutil.which("redis-server"),
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--enable-debug-command", "local"),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    url = f"redis://127.0.0.1:{port}/0"
    env = {**worker_env, "REDIS_URL": url, "MPBOT_LLM_TIMEOUT": "60"}  # a job may outlast the pause
    with run_workers(env, 2, tmp_path / "workers.log"):
        app = create_app({**SHARED, "REDIS_URL": url, "OPENAI_BASE_URL": fake_llm_server[1]})
        web, http = serve(app)
        try:
            yield {
                "process": server,
                "url": url,
                "app": app,
                "wechat": WeChat(web, SHARED["WECHAT_TOKEN"], timeout=5.0),
            }
        finally:
            server.send_signal(signal.SIGCONT)
            http.shutdown()
            http.server_close()
            app.mpbot.close()
    server.terminate()
    server.wait(5)


def test_a_redis_pause_longer_than_a_heartbeat_does_not_run_a_living_job_twice(paused_redis, fake_llm):
    """Redis stopped for 12 s while a job waits 38 s for the model: every heartbeat lapses with
    Redis, but no worker takes the living job for dead, neither while maintenance waits after
    the outage (a TTL and two beats) nor after: the heartbeats have resumed. One model call."""
    wechat, process = paused_redis["wechat"], paused_redis["process"]
    assert "对话已开始" in wechat.say("/chatgpt", openid="paused")
    fake_llm.rules["长回答"] = Rule(latency=2, content="长" * 36, pieces=36, piece_delay=1.0)
    msgid = wechat.new_msgid()
    threading.Thread(target=lambda: wechat.deliver(text_xml("长回答", msgid, "paused")), daemon=True).start()
    time.sleep(1.0)
    process.send_signal(signal.SIGSTOP)
    time.sleep(12)
    process.send_signal(signal.SIGCONT)
    final = paused_redis["app"].mpbot.answers.wait(str(msgid), timeout=60)
    assert final is not None and final["state"] == "done"
    time.sleep(8)  # a second run, had there been one, would have begun by now
    assert fake_llm.calls_for("长回答") == 1


def test_a_redis_that_stalls_briefly_still_answers_the_waiting_delivery(paused_redis, fake_llm):
    """Redis busy for 1.5 s (DEBUG SLEEP) while a delivery waits for its answer: it still answers."""
    wechat = paused_redis["wechat"]
    assert "对话已开始" in wechat.say("/chatgpt", openid="stalled")
    fake_llm.rules["稍等"] = Rule(latency=3)
    client = redis.Redis.from_url(paused_redis["url"])
    threading.Timer(1.0, lambda: client.execute_command("DEBUG", "SLEEP", "1.5")).start()
    try:
        assert wechat.say("稍等", openid="stalled") == "答：稍等"
    finally:
        time.sleep(1.0)
        client.close()


def test_an_answer_that_ends_while_redis_is_paused_is_kept(paused_redis, fake_llm):
    """The model finishes while Redis is stopped (SIGSTOP, 8 s): the job keeps its answer and
    writes it when Redis returns. One model call, and the subscriber's next message reads it.
    (Before, the job's writes failed: its answer was lost, or RQ's retry asked the model again.)"""
    wechat, process = paused_redis["wechat"], paused_redis["process"]
    assert "对话已开始" in wechat.say("/chatgpt", openid="kept")
    fake_llm.rules["暂停时写完"] = Rule(latency=2.5, content="暂停时写完的回答。")
    msgid = wechat.new_msgid()
    asked = time.monotonic()
    threading.Thread(target=lambda: wechat.deliver(text_xml("暂停时写完", msgid, "kept")), daemon=True).start()
    time.sleep(1.0)
    process.send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        while fake_llm.timeline[-1][2] is None:  # the model has sent its whole answer
            assert time.monotonic() < deadline, "the model call did not end"
            time.sleep(0.1)
        time.sleep(6)
    finally:
        process.send_signal(signal.SIGCONT)
    final = paused_redis["app"].mpbot.answers.wait(str(msgid), timeout=20)
    assert final is not None and final["state"] == "done", final
    assert final["text"] == "暂停时写完的回答。"
    # The delivery apologised while Redis was away; once the message's window is over (16 s from
    # when the bot took it: WeChat would have sent its last delivery by 15 s), the next message
    # reads the answer.
    time.sleep(max(0.0, asked + 17.5 - time.monotonic()))
    assert "暂停时写完的回答。" in wechat.say("继续", openid="kept")
    assert fake_llm.calls_for("暂停时写完") == 1


def test_redis_that_hangs_late_in_the_last_delivery_still_gets_the_apology_in_time(paused_redis, fake_llm, tmp_path):
    """The Procfile's web process (gunicorn, gevent). The answer does not come; Redis stops
    (SIGSTOP) 4.2 s into WeChat's third delivery, while it waits: the apology still comes within
    WeChat's 5 s (it came after 6.6 s when the wait's last read waited out its socket timeout)."""
    port = free_port()
    env = {**os.environ, **{k: str(v) for k, v in SHARED.items()}, "PYTHONPATH": ROOT}
    env.update(REDIS_URL=paused_redis["url"], BIND=f"127.0.0.1:{port}", OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    log = open(tmp_path / "web.log", "w")
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "python:mpbot.gunicorn_conf", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    process = paused_redis["process"]
    try:
        wechat = WeChat(f"http://127.0.0.1:{port}", SHARED["WECHAT_TOKEN"], timeout=10.0)
        deadline = time.monotonic() + 30
        while True:
            try:
                assert "对话已开始" in wechat.say("/chatgpt", openid="late")
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, (tmp_path / "web.log").read_text()
                time.sleep(0.2)
        fake_llm.rules["迟迟不来"] = Rule(latency=60)
        body = text_xml("迟迟不来", wechat.new_msgid(), "late")
        for _ in range(2):  # deliveries 1 and 2: WeChat gives up on them
            with pytest.raises(requests.exceptions.ReadTimeout):
                wechat.post(body, timeout=0.3)
        time.sleep(0.3)
        threading.Timer(4.2, lambda: process.send_signal(signal.SIGSTOP)).start()
        started = time.monotonic()
        response = wechat.post(body)
        took = time.monotonic() - started
        assert response.status_code == 200
        assert "稍后再试" in wechat.reply_text(response.text)
        assert took < 5.0, f"the last delivery answered after {took:.2f} s"
    finally:
        process.send_signal(signal.SIGCONT)
        web.send_signal(signal.SIGTERM)
        web.wait(20)
        log.close()
