"""Fault injection against the real processes; prints what was injected and what was lost.

    python bench/faults.py                  # every scenario (about three minutes)
    python bench/faults.py --only sigterm   # some of them: worker-kill, redis-restart,
                                            # web-restart, sigterm, llm-errors,
                                            # model-silent, redis-stop

Each scenario starts its own stack from the Procfile's lines (gunicorn with two processes, an RQ
worker pool), its own redis-server on a free loopback port, and a fake OpenAI-compatible model
(tests/fakes.py), then plays WeChat against it (signed deliveries, three per message, one
MsgId). WeChat's clock runs five times faster than the real one (a delivery is dropped after
1 s), as in the tests. Exit code 1 when a target is missed: answers lost, a second model call
that completed for one message, or a WeChat error shown to a subscriber.
"""

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import redis  # noqa: E402
import requests  # noqa: E402
from stack import TOKEN, Stack  # noqa: E402

from fakes import FakeLLM, Rule, WeChat, text_xml  # noqa: E402
from mpbot.keys import Keys  # noqa: E402
from mpbot.links import Links  # noqa: E402


def answer_of(stack: Stack, msgid: int, expected: str, wait: float = 0) -> bool:
    """Whether the answer to ``msgid`` exists, whole, in the store (the page and the next message
    show it from there), waiting up to ``wait`` seconds; read through the answer page's poll."""
    links = Links(SimpleNamespace(SECRET_KEY=stack.env["SECRET_KEY"], PUBLIC_URL=stack.url, MPBOT_LINK_TTL=3600))
    poll = f"{stack.url}/answer/{links.token(str(msgid))}/poll"
    deadline = time.monotonic() + wait
    while True:
        try:
            view = requests.get(poll, params={"after": "0-0"}, timeout=15).json()
            if view["state"] in ("done", "error"):
                return view["state"] == "done" and expected in view["html"]
        except (requests.RequestException, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def completed_calls(fake: FakeLLM, question: str) -> int:
    """Model calls for ``question`` that delivered an answer (a call cut by a fault did not)."""
    with fake.lock:
        return sum(1 for entry in fake.timeline if entry[0] == question and entry[3])


# --- scenarios ----------------------------------------------------------------------------------


def worker_kill(fake: FakeLLM) -> dict:
    """SIGKILL the worker pool's process running a job, mid-call."""
    stack = Stack(fake.url).start()
    try:
        wechat = WeChat(stack.url, TOKEN, timeout=1.0)
        wechat.say("/chatgpt")
        fake.rules["被杀的问题"] = Rule(latency=6.0, content="答：被杀的问题")
        msgid = wechat.new_msgid()
        wechat.deliver(text_xml("被杀的问题", msgid), deliveries=1)
        from rq import Worker

        client = redis.Redis(port=stack.redis_port)
        deadline = time.monotonic() + 10
        victim = None
        while victim is None and time.monotonic() < deadline:
            for worker in Worker.all(connection=client):
                if worker.get_current_job_id() == f"answer-{msgid}":
                    victim = worker.pid
            time.sleep(0.1)
        assert victim, "no worker picked the job up"
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        arrived = answer_of(stack, msgid, "被杀的问题", wait=150)
        recovered = time.monotonic() - killed_at
        duplicates = max(0, completed_calls(fake, "被杀的问题") - 1)
        calls = fake.calls_for("被杀的问题")
        return {
            "fault": "RQ worker SIGKILLed mid-call",
            "injected": 1,
            "lost": 0 if arrived else 1,
            "duplicates": duplicates,
            "wechat_errors": 0,
            "missed": recovered > 30 or calls > 2,
            "recovery": f"answer whole {recovered:.1f} s after the kill (target <= 30 s), {calls} model calls "
            "(target <= 2): the job's heartbeat lapsed and a maintenance pass ran it again",
        }
    finally:
        stack.stop()


def model_silent(fake: FakeLLM) -> dict:
    """The model accepts the call and sends no token (a stream that never begins)."""
    stack = Stack(fake.url, MPBOT_LLM_TIMEOUT="120", MPBOT_LLM_RETRIES="3").start()
    try:
        wechat = WeChat(stack.url, TOKEN, timeout=1.0)
        wechat.say("/chatgpt")
        fake.rules["沉默的模型"] = Rule(stall=120, stall_calls=1, content="答：沉默的模型")
        msgid = wechat.new_msgid()
        asked = time.monotonic()
        log = wechat.deliver(text_xml("沉默的模型", msgid))
        arrived = answer_of(stack, msgid, "沉默的模型", wait=60)
        took = time.monotonic() - asked
        with fake.lock:
            starts = [entry[1] for entry in fake.timeline if entry[0] == "沉默的模型"]
        gap = starts[1] - starts[0] if len(starts) > 1 else float("inf")
        return {
            "fault": "model accepts and sends no token",
            "injected": 1,
            "lost": 0 if arrived else 1,
            "duplicates": max(0, completed_calls(fake, "沉默的模型") - 1),
            "wechat_errors": int(log[-1].status != 200),
            "missed": gap > 30 or took > 40,
            "recovery": f"new attempt {gap:.1f} s after the first (target <= 30 s), answer readable {took:.1f} s "
            "after the question (target <= 40 s)",
        }
    finally:
        stack.stop()


def redis_stop(fake: FakeLLM) -> dict:
    """Redis stopped (SIGSTOP: neither answering nor refusing) for 12 s, at WeChat's real speed."""
    stack = Stack(fake.url, MPBOT_WECHAT_TIMEOUT="5.0", MPBOT_DELIVERY_WAIT="4.5").start()
    try:
        wechat = WeChat(stack.url, TOKEN, timeout=5.0)
        assert "对话已开始" in wechat.say("/chatgpt")
        os.kill(stack.redis.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        slowest, errors, apologies, health = 0.0, 0, 0, None
        try:
            started = time.monotonic()
            status = requests.get(f"{stack.url}/healthz", timeout=5).status_code
            health = (status, time.monotonic() - started)
            for text in ("/help", "宕机时的问题", "/stop", "又一个问题"):
                started = time.monotonic()
                try:
                    response = wechat.post(text_xml(text, wechat.new_msgid()))
                except requests.RequestException:
                    errors += 1
                    continue
                slowest = max(slowest, time.monotonic() - started)
                if response.status_code != 200:
                    errors += 1
                elif "稍后再试" in wechat.reply_text(response.text):
                    apologies += 1
            time.sleep(max(0.0, 12 - (time.monotonic() - stopped)))
        finally:
            os.kill(stack.redis.pid, signal.SIGCONT)
        back = time.monotonic()
        log = wechat.deliver(text_xml("恢复后", wechat.new_msgid()))
        normal = log[-1].status == 200 and wechat.reply_text(log[-1].body) == "答：恢复后"
        return {
            "fault": "Redis stopped (SIGSTOP) for 12 s",
            "injected": 4,
            "lost": 4 - apologies + (0 if normal else 1),
            "duplicates": 0,
            "wechat_errors": errors,
            "missed": slowest > 4.5 or health is None or health[0] != 503 or health[1] > 1.0,
            "recovery": f"every delivery answered in <= {slowest:.1f} s (target <= 4.5 s), {apologies}/4 saying to "
            f"try again; /healthz {health[0] if health else '?'} in {health[1] if health else 0:.2f} s (target 503 "
            f"<= 1 s); after SIGCONT answered normally in {time.monotonic() - back:.1f} s",
        }
    finally:
        with contextlib.suppress(OSError, AttributeError):
            os.kill(stack.redis.pid, signal.SIGCONT)
        stack.stop()


def redis_restart(fake: FakeLLM) -> dict:
    """Stop Redis (with AOF persistence) mid-conversation, ask while it is down, start it again."""
    stack = Stack(fake.url, persist=True).start()
    try:
        wechat = WeChat(stack.url, TOKEN, timeout=1.0)
        errors = 0
        assert "对话已开始" in wechat.say("/chatgpt")
        assert wechat.say("重启前") == "答：重启前"
        stack.stop_redis()
        down = wechat.deliver(text_xml("宕机时", wechat.new_msgid()))
        errors += sum(1 for d in down if d.status not in (200, None)) + (down[-1].status is None)
        apology = wechat.reply_text(down[-1].body) if down[-1].status == 200 else ""
        stack.start_redis()
        up_at = time.monotonic()
        while True:
            log = wechat.deliver(text_xml("恢复后", wechat.new_msgid()))
            errors += (log[-1].status != 200) and 1
            if log[-1].status == 200 and wechat.reply_text(log[-1].body) == "答：恢复后":
                break
            if time.monotonic() - up_at > 60:
                return {"fault": "Redis restarted", "injected": 1, "lost": 1, "duplicates": 0, "wechat_errors": errors}
        recovery = time.monotonic() - up_at
        return {
            "fault": "Redis restarted (AOF on)",
            "injected": 1,
            "lost": 0,
            "duplicates": max(0, completed_calls(fake, "恢复后") - 1),
            "wechat_errors": errors,
            "recovery": f"{recovery:.2f} s to the first answer after Redis was back; "
            f"session kept; while down: {apology[:12]!r}",
        }
    finally:
        stack.stop()


def web_restart(fake: FakeLLM) -> dict:
    """SIGKILL the web between deliveries of one message; a new web takes the next delivery."""
    stack = Stack(fake.url).start()
    try:
        wechat = WeChat(stack.url, TOKEN, timeout=1.0)
        wechat.say("/chatgpt")
        fake.rules["换进程"] = Rule(latency=1.5)
        msgid = wechat.new_msgid()
        first = wechat.deliver(text_xml("换进程", msgid), deliveries=1)
        assert first[-1].status is None, "delivery 1 should have been held"
        stack.signal(stack.web, signal.SIGKILL)
        stack.web.wait(10)
        stack.start_web()
        second = wechat.post(text_xml("换进程", msgid), timeout=5)
        got = second.status_code == 200 and wechat.reply_text(second.text) == "答：换进程"
        return {
            "fault": "web SIGKILLed between deliveries",
            "injected": 1,
            "lost": 0 if got else 1,
            "duplicates": max(0, completed_calls(fake, "换进程") - 1),
            "wechat_errors": 0 if second.status_code == 200 else 1,
        }
    finally:
        stack.stop()


def sigterm(fake: FakeLLM) -> dict:
    """SIGTERM the web and the workers while a delivery waits and its job runs."""
    # WeChat's real 5 s for the delivery (the other scenarios run its clock five times faster):
    # a machine busy with other work still answers within it.
    stack = Stack(fake.url, MPBOT_WECHAT_TIMEOUT="5.0", MPBOT_DELIVERY_WAIT="4.5").start()
    try:
        wechat = WeChat(stack.url, TOKEN, timeout=5.0)
        wechat.say("/chatgpt")
        # Answered within the held delivery (5.5 s here), while both processes shut down.
        fake.rules["正在关机"] = Rule(latency=1.2)
        result = {}
        msgid = wechat.new_msgid()
        thread = threading.Thread(target=lambda: result.update(r=wechat.post(text_xml("正在关机", msgid), timeout=8)))
        thread.start()
        # Mid-answer: once a worker has started the job (on a loaded machine that can take longer
        # than the model's 1.2 s would leave to spare after a fixed pause).
        client, key = redis.Redis(port=stack.redis_port), Keys("mpbot").answer(str(msgid))
        deadline = time.monotonic() + 5
        while not any(b'"started"' in fields[b"e"] for _id, fields in client.xrange(key)):
            assert time.monotonic() < deadline, "no worker started the job within 5 s"
            time.sleep(0.02)
        stack.signal(stack.web, signal.SIGTERM)
        stack.signal(stack.workers, signal.SIGTERM)
        thread.join()
        response = result.get("r")
        got = (
            response is not None and response.status_code == 200 and "答：正在关机" in wechat.reply_text(response.text)
        )
        exits = [stack.web.wait(15), stack.workers.wait(15)]
        # The worker finished its job before it exited: the answer is in the store.
        events = redis.Redis(port=stack.redis_port).xrange(Keys("mpbot").answer(str(msgid)))
        got = got and any(b'"state": "done"' in fields[b"e"] for _id, fields in events)
        return {
            "fault": "SIGTERM to web and workers mid-answer",
            "injected": 1,
            "lost": 0 if got else 1,
            "duplicates": max(0, completed_calls(fake, "正在关机") - 1),
            "wechat_errors": 0 if got else 1,
            "recovery": f"both exited (codes {exits}) after the reply",
        }
    finally:
        stack.stop()


def llm_errors(fake: FakeLLM) -> dict:
    """The model answers 503, 429 (Retry-After) and breaks a stream, once each."""
    stack = Stack(fake.url).start()
    try:
        wechat = WeChat(stack.url, TOKEN, timeout=1.0)
        wechat.say("/chatgpt")
        fake.rules["五百"] = Rule(status=503, failures=1)
        fake.rules["限流"] = Rule(status=429, failures=1, retry_after=0.5)
        fake.rules["断流"] = Rule(content="一。二。三。", pieces=3, break_after=1, failures=1)
        lost = errors = 0
        for question, expected in (("五百", "答：五百"), ("限流", "答：限流"), ("断流", "一。二。三。")):
            log = wechat.deliver(text_xml(question, wechat.new_msgid()))
            errors += log[-1].status != 200
            lost += log[-1].status != 200 or wechat.reply_text(log[-1].body) != expected
        return {
            "fault": "model 503 / 429 / broken stream",
            "injected": 3,
            "lost": lost,
            "duplicates": sum(max(0, completed_calls(fake, q) - 1) for q in ("五百", "限流", "断流")),
            "wechat_errors": errors,
        }
    finally:
        stack.stop()


SCENARIOS = {
    "llm-errors": llm_errors,
    "web-restart": web_restart,
    "sigterm": sigterm,
    "redis-restart": redis_restart,
    "worker-kill": worker_kill,
    "model-silent": model_silent,
    "redis-stop": redis_stop,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    args = parser.parse_args()
    fake = FakeLLM()
    fake.url = fake.start()
    rows = []
    for name in args.only.split(","):
        fake.reset()
        started = time.monotonic()
        try:
            row = SCENARIOS[name](fake)
        except Exception as exc:  # a scenario that could not run is a miss, said plainly
            row = {"fault": name, "injected": 0, "lost": "?", "duplicates": "?", "wechat_errors": "?"}
            row["recovery"] = f"could not run: {exc.__class__.__name__}: {exc}"
        row["seconds"] = time.monotonic() - started
        rows.append(row)
        print(
            f"{row['fault']:<40} injected {row['injected']}  lost {row['lost']}  duplicate model calls "
            f"{row['duplicates']}  WeChat errors {row['wechat_errors']}  ({row['seconds']:.0f} s)"
            + (f"\n{'':<40} {row['recovery']}" if row.get("recovery") else "")
            + (f"\n{'':<40} MISSED a target above" if row.get("missed") else ""),
            flush=True,
        )
    total = {key: sum(r[key] for r in rows if isinstance(r[key], int)) for key in ("injected", "lost", "duplicates")}
    errors = sum(r["wechat_errors"] for r in rows if isinstance(r["wechat_errors"], int))
    unknown = any(not isinstance(r["lost"], int) for r in rows)
    print(
        f"\nfaults injected {total['injected']}, answers lost {total['lost']} (target 0), duplicate model calls "
        f"{total['duplicates']} (target 0), WeChat errors {errors} (target 0)"
        + (", some scenarios could not run" if unknown else "")
    )
    missed = [r["fault"] for r in rows if r.get("missed")]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
    return 1 if unknown or missed or total["lost"] or total["duplicates"] or errors else 0


if __name__ == "__main__":
    sys.exit(main())
