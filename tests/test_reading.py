"""Every answer is read whole in the chat: in parts with 继续, from what exists so far on the last
delivery, and by the next message after a fallback; and no question is dropped on the way."""

import re
import threading
import time

import pytest

from fakes import Rule, body_of, link_in, text_xml
from mpbot.simulator import as_seen

CONTINUE = "继续"
NOTHING_MORE = "没有需要继续看的回答了，请直接发送问题。"
PARAGRAPHS = [f"第{i}段。" + "这一段讲一个要点，" * 10 + "讲完了。" for i in range(1, 16)]
LONG = "\n\n".join(PARAGRAPHS)


def in_session(wechat, openid="user-1"):
    assert "对话已开始" in wechat.say("/chatgpt", openid)


def say_later(wechat, delay: float, content: str, results: dict, openid="user-1") -> threading.Thread:
    def run():
        time.sleep(delay)
        results[content] = wechat.say(content, openid)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_continue_reads_a_long_answer_in_numbered_parts(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["讲长一点"] = Rule(content=LONG)
    replies = [bot.say("讲长一点"), bot.say(CONTINUE), bot.say(CONTINUE)]
    assert all(len(reply.encode()) <= 2047 for reply in replies)
    seen = [as_seen(reply) for reply in replies]
    assert "（1/3）发送「继续」看下一段" in seen[0] and "（2/3）发送「继续」看下一段" in seen[1]
    assert replies[2].endswith("（3/3 完）")
    assert link_in(replies[0]).startswith("https://bot.example.com/answer/")
    # Cut at paragraph ends, nothing lost, nothing repeated.
    assert all(body_of(reply).endswith("讲完了。") for reply in replies)
    assert "\n\n".join(body_of(reply) for reply in replies) == LONG
    assert bot.say(CONTINUE) == NOTHING_MORE
    assert fake_llm.calls_for("讲长一点") == 1


def test_a_retried_continue_gets_the_same_part_and_reading_moves_on_once(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["讲长一点"] = Rule(content=LONG)
    assert "（1/3）" in bot.say("讲长一点")
    message = text_xml(CONTINUE, bot.new_msgid())
    first, again = bot.post(message), bot.post(message)  # WeChat sent it again
    assert bot.reply_text(first.text) == bot.reply_text(again.text)
    assert "（2/3）" in bot.reply_text(first.text)
    assert bot.say(CONTINUE).endswith("（3/3 完）")


def test_a_new_question_after_part_one_gets_its_own_answer(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["讲长一点"] = Rule(content=LONG)
    assert "（1/3）" in bot.say("讲长一点")
    # The subscriber moved on; the rest of the long answer stays on its page.
    assert bot.say("另一个问题") == "答：另一个问题"
    assert bot.say(CONTINUE) == NOTHING_MORE


@pytest.mark.slow
def test_last_delivery_carries_the_text_so_far_and_continue_gives_the_rest(bot, fake_llm):
    in_session(bot)
    sentences = "".join(f"第{i}句话说完了。" for i in range(1, 21))
    # 20 pieces, 0.2 s apart: about half exists when the last delivery must answer (2.8 s).
    fake_llm.rules["慢慢说"] = Rule(latency=0.2, content=sentences, pieces=20, piece_delay=0.2)
    reply = bot.say("慢慢说")
    head, _, tail = reply.partition("\n……\n")
    assert head, reply
    assert sentences.startswith(head) and head.endswith("说完了。"), "the text so far is cut at a sentence end"
    assert len(head) < len(sentences)
    assert "还在生成中" in tail and link_in(tail).startswith("https://bot.example.com/answer/")
    time.sleep(2.0)  # the answer finishes
    rest = bot.say(CONTINUE)
    assert rest.startswith("关于「慢慢说」："), "a later message names the question first"
    assert not re.search(r"（\d+/\d+", rest), "the rest fits in one message: not numbered"
    assert head + body_of(rest) == sentences
    assert fake_llm.calls_for("慢慢说") == 1


@pytest.mark.slow
def test_next_message_after_a_fallback_delivers_the_answer_and_its_question_is_answered_next(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["难题"] = Rule(latency=3.2, content="难题的答案。")
    fallback = bot.say("难题")
    assert "回答还在生成中" in fallback and "难题的答案" not in fallback
    time.sleep(0.8)  # the answer is done now
    reply = bot.say("新问题")
    assert reply.startswith("关于「难题」：\n\n难题的答案。"), "it names the question it answers"
    assert "你刚发的问题已收到" in reply
    assert bot.say(CONTINUE) == "关于「新问题」：\n\n答：新问题"
    assert bot.say(CONTINUE) == NOTHING_MORE
    assert [call["messages"][-1]["content"] for call in fake_llm.calls] == ["难题", "新问题"]
    # The second question was asked with the first one's answer as context.
    assert {"role": "assistant", "content": "难题的答案。"} in fake_llm.calls[1]["messages"]


@pytest.mark.slow
def test_any_message_fetches_the_answer_even_after_the_session_expired(make_bot, fake_llm):
    wechat = make_bot(MPBOT_SESSION_TTL=2)
    in_session(wechat)
    fake_llm.rules["难题"] = Rule(latency=3.2, content="难题的答案。")
    assert "回答还在生成中" in wechat.say("难题")
    time.sleep(1.0)
    reply = wechat.say("在吗")
    assert reply.startswith("关于「难题」：\n\n难题的答案。")
    assert "发送 /chatgpt 开始新的对话" in as_seen(reply)
    assert fake_llm.calls_for("在吗") == 0


@pytest.mark.slow
def test_a_picture_after_a_fallback_fetches_the_answer_too(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["难题"] = Rule(latency=3.2, content="难题的答案。")
    assert "回答还在生成中" in bot.say("难题")
    time.sleep(0.8)
    image = (
        "<xml><ToUserName><![CDATA[gh_account]]></ToUserName><FromUserName><![CDATA[user-1]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[image]]></MsgType>"
        "<PicUrl><![CDATA[http://example.com/p.jpg]]></PicUrl><MediaId><![CDATA[m]]></MediaId>"
        f"<MsgId>{bot.new_msgid()}</MsgId></xml>"
    ).encode()
    # The picture is a question of its own (media.py): it shows the waiting answer, and comes next.
    reply = bot.reply_text(bot.post(image).text)
    assert reply.startswith("关于「难题」：\n\n难题的答案。") and "你刚发的问题已收到" in reply, reply
    # Its own answer: example.com is not a host pictures are fetched from, and there is no AppSecret.
    later = bot.reply_text(bot.post(image.replace(b"<MsgId>", b"<MsgId>9")).text)
    assert "没能取到这张图片" in later, later


@pytest.mark.slow
def test_a_question_sent_while_the_previous_is_generating_waits_its_turn(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["第一问"] = Rule(latency=1.5, content="一")
    fake_llm.rules["第二问"] = Rule(latency=0.2, content="二")
    results = {}
    threads = [say_later(bot, 0, "第一问", results), say_later(bot, 0.3, "第二问", results)]
    for thread in threads:
        thread.join()
    assert results == {"第一问": "一", "第二问": "二"}
    first_ended = fake_llm.span("第一问")[1]
    second_started = fake_llm.span("第二问")[0]
    assert second_started >= first_ended, "one model call per subscriber at a time"


@pytest.mark.slow
def test_a_waiting_question_says_so_and_both_answers_are_read_in_order(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["第一问"] = Rule(latency=3.3, content="一")
    fake_llm.rules["第二问"] = Rule(latency=0.2, content="二")
    results = {}
    threads = [say_later(bot, 0, "第一问", results), say_later(bot, 0.3, "第二问", results)]
    for thread in threads:
        thread.join()
    assert "回答还在生成中" in results["第一问"]
    assert "排在它后面" in results["第二问"]
    time.sleep(1.0)
    assert bot.say(CONTINUE) == "关于「第一问」：\n\n一"
    assert bot.say(CONTINUE) == "关于「第二问」：\n\n二"


@pytest.mark.slow
def test_other_subscribers_do_not_wait_for_each_other(bot, fake_llm):
    in_session(bot, "alice")
    in_session(bot, "bob")
    fake_llm.rules["alice 的问题"] = Rule(latency=1.5, content="给 alice")
    fake_llm.rules["bob 的问题"] = Rule(latency=0.2, content="给 bob")
    results = {}
    threads = [
        say_later(bot, 0, "alice 的问题", results, "alice"),
        say_later(bot, 0.2, "bob 的问题", results, "bob"),
    ]
    for thread in threads:
        thread.join()
    assert results == {"alice 的问题": "给 alice", "bob 的问题": "给 bob"}
    assert fake_llm.span("bob 的问题")[0] < fake_llm.span("alice 的问题")[1]


@pytest.mark.slow
def test_stop_cancels_a_waiting_question(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["第一问"] = Rule(latency=1.5, content="一")
    results = {}
    threads = [say_later(bot, 0, "第一问", results), say_later(bot, 0.2, "第二问", results)]
    time.sleep(0.5)
    assert "对话已结束" in bot.say("/stop")
    for thread in threads:
        thread.join()
    assert results["第一问"] == "一", "an answer being written still arrives"
    assert "取消" in results["第二问"]
    time.sleep(0.5)
    assert fake_llm.calls_for("第二问") == 0


@pytest.mark.slow
def test_too_many_waiting_questions_get_asked_to_wait(make_bot, fake_llm):
    wechat = make_bot(MPBOT_MAX_QUEUED=1)
    in_session(wechat)
    fake_llm.rules["第一问"] = Rule(latency=1.5)
    results = {}
    threads = [say_later(wechat, 0, "第一问", results), say_later(wechat, 0.2, "第二问", results)]
    time.sleep(0.4)
    assert "请等它们回答完再提问" in wechat.say("第三问")
    for thread in threads:
        thread.join()
    assert fake_llm.calls_for("第三问") == 0


@pytest.mark.slow
@pytest.mark.parametrize("broken_after", [3])
def test_an_answer_that_breaks_off_says_so_and_keeps_no_half_answer_in_the_chat(bot, fake_llm, broken_after):
    in_session(bot)
    fake_llm.rules["断了"] = Rule(
        content="第一句。第二句。第三句。第四句。第五句。", pieces=5, break_after=broken_after
    )
    reply = bot.say("断了")
    assert "回答出错" in reply
    assert bot.say("好问题") == "答：好问题"
