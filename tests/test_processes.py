"""Faults on the real processes (gunicorn from the Procfile, RQ workers, redis-server), through
bench/faults.py: a web process killed between deliveries, SIGTERM mid-answer, Redis restarted,
model errors. (The killed RQ worker takes RQ over a minute to notice: `make faults` runs it.)"""

import os
import subprocess
import sys
import time

import pytest
import redis

from conftest import FAST, ROOT, SHARED, run_workers
from fakes import Rule, WeChat, serve, text_xml
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
    import signal

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
