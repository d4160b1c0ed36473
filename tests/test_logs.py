"""What the admin's log holds: one line per delivery and per job, no message text, no openid."""

import logging
import re
import time

import pytest

from conftest import SECRET, TOKEN
from fakes import Rule
from mpbot.logs import user_tag


@pytest.mark.slow
def test_logs_say_what_happened_without_the_question_the_answer_or_the_openid(request, mode, bot, fake_llm, caplog):
    caplog.set_level(logging.INFO)
    bot.say("/chatgpt", openid="o-secret-openid")
    fake_llm.rules["我的银行卡密码忘了"] = Rule(content="请联系银行柜台")
    assert bot.say("我的银行卡密码忘了", openid="o-secret-openid") == "请联系银行柜台"
    fake_llm.rules["慢慢说"] = Rule(latency=3.2)
    fallback = bot.say("慢慢说", openid="o-secret-openid")
    link_token = re.search(r'href="[^"]+/answer/([^"]+)"', fallback).group(1)
    time.sleep(0.3)  # the job's last log line comes after its answer
    lines = [record.getMessage() for record in caplog.records]
    if mode == "redis":
        lines += request.getfixturevalue("rq_log").read_text().splitlines()
    text = "\n".join(lines)
    assert "delivery msgid=" in text and "outcome=done" in text
    assert "job msgid=" in text
    # One structured line per job: who (hashed), how it ended, how long the model took.
    tag = user_tag("o-secret-openid")
    job = next(line for line in lines if "job msgid=" in line and f"user={tag} outcome=done" in line)
    assert re.search(r"llm_ms=\d+ first_text_ms=\d+ chars=7 took_ms=\d+", job), job
    delivery = next(line for line in lines if "delivery msgid=" in line and "outcome=answered" in line)
    assert re.search(r"user=[0-9a-f]{12} n=1 outcome=answered waited_ms=\d+", delivery), delivery
    for secret in ("银行卡", "请联系银行柜台", "o-secret-openid", "sk-test", TOKEN, SECRET, link_token):
        assert secret not in text, secret
