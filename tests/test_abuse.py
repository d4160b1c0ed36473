"""Abuse: too many questions, unwelcome questions and answers, a moderation API."""

import time

import moderation_hook
import pytest
import requests

from fakes import Rule, text_xml
from mpbot.config import load_config
from mpbot.errors import ConfigError

BANNED = "抱歉，这个话题暂时无法讨论，换个问题试试吧。"


def in_session(wechat, openid="user-1"):
    assert "对话已开始" in wechat.say("/chatgpt", openid)


@pytest.mark.slow
def test_too_many_questions_get_a_friendly_reply_and_never_reach_the_model(make_bot, fake_llm):
    wechat = make_bot(MPBOT_RATE_LIMIT=2, MPBOT_RATE_WINDOW=2)
    in_session(wechat)
    assert wechat.say("一") == "答：一"
    assert wechat.say("二") == "答：二"
    assert wechat.say("三") == "提问太快啦，请稍等一分钟再发送。"
    assert "可用命令" in wechat.say("/help"), "commands are not limited"
    assert fake_llm.calls_for("三") == 0
    time.sleep(2.1)
    assert wechat.say("四") == "答：四"


def test_the_limit_is_per_subscriber(make_bot, fake_llm):
    wechat = make_bot(MPBOT_RATE_LIMIT=1, MPBOT_RATE_WINDOW=30)
    in_session(wechat, "alice")
    in_session(wechat, "bob")
    assert wechat.say("问", "alice") == "答：问"
    assert "提问太快" in wechat.say("再问", "alice")
    assert wechat.say("问", "bob") == "答：问"


def test_a_question_with_a_banned_word_is_refused_before_the_model(make_bot, fake_llm):
    wechat = make_bot(MPBOT_BANNED_WORDS=["禁词", "BadWord"])
    in_session(wechat)
    assert wechat.say("这里有禁词吗") == BANNED
    assert wechat.say("a badword here") == BANNED
    assert len(fake_llm.calls) == 0
    assert wechat.say("正常问题") == "答：正常问题"


@pytest.mark.slow
def test_an_answer_with_a_banned_word_is_withdrawn_in_the_chat_and_on_the_page(make_bot, fake_llm, mode):
    if mode == "redis":
        pytest.skip("the workers' banned words are set at their start; embedded covers the job")
    wechat = make_bot(MPBOT_BANNED_WORDS=["禁词"])
    in_session(wechat)
    content = "干净的开头。" * 6 + "然后出现了禁词。" + "后面还有。" * 4
    fake_llm.rules["说说"] = Rule(latency=0.2, content=content, pieces=12, piece_delay=0.1)
    msgid = wechat.new_msgid()
    log = wechat.deliver(text_xml("说说", msgid))
    assert wechat.reply_text(log[-1].body) == BANNED
    page = requests.get(f"{wechat.url}/answer/{wechat.app.mpbot.links.token(str(msgid))}", timeout=5)
    assert BANNED in page.text
    assert "干净的开头" not in page.text, "what streamed before the banned word is withdrawn too"
    # Nor is it kept as context for the next question.
    assert wechat.say("下一个") == "答：下一个"
    assert "干净的开头" not in str(fake_llm.calls[-1]["messages"])


def test_a_moderation_hook_sees_questions_and_answers_and_can_refuse_either(make_bot, fake_llm, mode):
    if mode == "redis":
        pytest.skip("the workers' hook is set at their start; embedded covers the job")
    moderation_hook.seen.clear()
    wechat = make_bot(MPBOT_MODERATION_HOOK="moderation_hook:allow_unless_secret")
    in_session(wechat)
    assert wechat.say("告诉我机密") == BANNED
    fake_llm.rules["普通问题"] = Rule(content="这是机密内容")
    assert wechat.say("普通问题") == BANNED
    assert wechat.say("好问题") == "答：好问题"
    assert ("question", "告诉我机密") in moderation_hook.seen
    assert ("answer", "这是机密内容") in moderation_hook.seen
    assert fake_llm.calls_for("告诉我机密") == 0


def test_a_failing_moderation_hook_refuses_rather_than_lets_through(make_bot, fake_llm):
    wechat = make_bot(MPBOT_MODERATION_HOOK="moderation_hook:broken")
    in_session(wechat)
    assert wechat.say("任何问题") == BANNED
    assert len(fake_llm.calls) == 0


def test_a_hook_that_cannot_be_loaded_is_refused_at_start():
    with pytest.raises(ConfigError, match="package.module:function"):
        from mpbot.moderation import Moderator

        Moderator(load_config({"WECHAT_TOKEN": "t", "MPBOT_MODERATION_HOOK": "no_such_module:f"}))
