"""Sessions and commands as a subscriber uses them."""

import time

import pytest

from fakes import Rule


def test_outside_a_session_questions_get_a_hint_and_never_reach_the_llm(bot, fake_llm):
    reply = bot.say("你好")
    assert "/chatgpt" in reply
    time.sleep(0.2)
    assert fake_llm.calls == []


def test_a_session_answers_questions_and_says_how_to_stop_and_clear(bot, fake_llm):
    started = bot.say("/chatgpt")
    assert "/stop" in started and "/clear" in started
    assert bot.say("1+1 等于几") == "答：1+1 等于几"


@pytest.mark.parametrize("command", ["/chatgpt", "  /ChatGPT  ", "/START", "开始"])
def test_commands_ignore_case_and_whitespace_and_have_aliases(bot, command):
    assert "对话已开始" in bot.say(command)


def test_earlier_turns_go_with_each_question_after_the_system_prompt(bot, fake_llm):
    bot.say("/chatgpt")
    bot.say("我叫小明")
    bot.say("我叫什么")
    messages = fake_llm.calls[-1]["messages"]
    assert messages[0]["role"] == "system"
    assert [m["content"] for m in messages[1:]] == ["我叫小明", "答：我叫小明", "我叫什么"]


def test_context_is_trimmed_to_the_budget_keeping_the_newest_turns(bot, fake_llm):
    bot.say("/chatgpt")
    fake_llm.default = Rule(content="好" * 60)
    for i in range(4):
        bot.say(f"问题{i}" + "长" * 30)
    bot.say("最后")
    sent = [m["content"] for m in fake_llm.calls[-1]["messages"][1:]]
    # The budget (MPBOT_CONTEXT_CHARS=200) holds two turns of ~95 characters.
    assert sent[-1] == "最后"
    assert sent[0].startswith("问题2") and sent[2].startswith("问题3")
    assert len(sent) == 5


def test_clear_drops_the_history_and_keeps_the_session(bot, fake_llm):
    bot.say("/chatgpt")
    bot.say("记住 42")
    assert "清空" in bot.say("/clear")
    assert bot.say("还记得吗") == "答：还记得吗"
    assert [m["content"] for m in fake_llm.calls[-1]["messages"][1:]] == ["还记得吗"]


def test_stop_ends_the_session(bot, fake_llm):
    bot.say("/chatgpt")
    assert "结束" in bot.say("/stop")
    assert "/chatgpt" in bot.say("还在吗")
    assert fake_llm.calls_for("还在吗") == 0
    assert "没有进行中" in bot.say("/stop")


def test_start_twice_keeps_the_history(bot, fake_llm):
    bot.say("/chatgpt")
    bot.say("第一句")
    assert "进行中" in bot.say("/chatgpt")
    bot.say("第二句")
    assert "第一句" in [m["content"] for m in fake_llm.calls[-1]["messages"]]


def test_help_lists_every_command(bot):
    reply = bot.say("/help")
    for command in ("/chatgpt", "/stop", "/clear", "/help"):
        assert command in reply


@pytest.mark.slow
def test_session_ends_after_idle_ttl_and_every_message_renews_it(make_bot, fake_llm):
    wechat = make_bot(MPBOT_SESSION_TTL=2)
    wechat.say("/chatgpt")
    for _ in range(3):
        time.sleep(1.0)
        assert wechat.say("还在") == "答：还在"  # each message renews the 2 s
    time.sleep(2.3)
    assert "/chatgpt" in wechat.say("还在吗")


def test_sessions_are_per_subscriber(bot, fake_llm):
    bot.say("/chatgpt", openid="alice")
    assert bot.say("我是 alice", openid="alice") == "答：我是 alice"
    assert "/chatgpt" in bot.say("我是 bob", openid="bob")
