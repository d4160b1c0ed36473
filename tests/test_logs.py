"""What the admin's log holds: one line per delivery and per job, no message text, no openid."""

import logging
import time

from fakes import Rule


def test_logs_say_what_happened_without_the_question_the_answer_or_the_openid(request, mode, bot, fake_llm, caplog):
    caplog.set_level(logging.INFO)
    bot.say("/chatgpt", openid="o-secret-openid")
    fake_llm.rules["我的银行卡密码忘了"] = Rule(content="请联系银行柜台")
    assert bot.say("我的银行卡密码忘了", openid="o-secret-openid") == "请联系银行柜台"
    time.sleep(0.3)  # the job's last log line comes after its answer
    lines = [record.getMessage() for record in caplog.records]
    if mode == "redis":
        lines += request.getfixturevalue("rq_log").read_text().splitlines()
    text = "\n".join(lines)
    assert "delivery msgid=" in text and "outcome=done" in text
    assert "job msgid=" in text
    for secret in ("银行卡", "请联系银行柜台", "o-secret-openid", "sk-test"):
        assert secret not in text, secret
