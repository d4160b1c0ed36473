"""What the subscriber reads: within the byte limit, cut cleanly, readable, never WeChat's error."""

import time

import pytest

from fakes import Rule
from mpbot.formatting import cut, cut_clean, markdown_to_text, paginate, strip_think, utf8_len


def in_session(bot):
    bot.say("/chatgpt")
    return bot


def test_answer_containing_cdata_end_survives_the_xml(bot, fake_llm):
    in_session(bot)
    tricky = "数组切片 a[b[0]]> 0，还有 ]]> 和 <![CDATA[ 以及 & < >"
    fake_llm.rules["cdata"] = Rule(content=tricky)
    assert bot.say("cdata") == tricky


def test_markdown_from_the_model_reads_as_plain_wechat_text(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["md"] = Rule(
        content="# 标题\n\n**粗体** 和 *斜体* 和 `代码`\n\n- 第一\n- 第二\n\n```python\nprint('hi')\n```\n\n[链接](https://x.cn)"
    )
    assert bot.say("md") == "【标题】\n\n粗体 和 斜体 和 代码\n\n• 第一\n• 第二\n\nprint('hi')\n\n链接 (https://x.cn)"


def test_reasoning_blocks_are_removed(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["think"] = Rule(content="<think>\n用户想知道……让我想想\n</think>\n\n答案是 4。")
    assert bot.say("think") == "答案是 4。"


def test_an_answer_cut_by_the_token_limit_says_so(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["写长文"] = Rule(content="开头。中间", finish_reason="length")
    assert bot.say("写长文").startswith("开头。中间\n\n（回答太长，到这里被截断了。")


def test_reasoning_is_not_kept_in_the_history(bot, fake_llm):
    in_session(bot)
    fake_llm.rules["think"] = Rule(content="<think>内心独白</think>答案")
    bot.say("think")
    bot.say("再问")
    assert "内心独白" not in str(fake_llm.calls[-1]["messages"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (Rule(status=500), "回答出错"),
        (Rule(status=429), "繁忙"),
        (Rule(status=400), "回答出错"),
        (Rule(content="", finish_reason="content_filter"), "无法回答"),
        (Rule(content=""), "没有给出回答"),
    ],
    ids=["server error", "rate limited", "bad request", "refusal", "empty"],
)
def test_llm_failures_give_a_clear_sentence_and_the_next_message_works(bot, fake_llm, rule, expected):
    in_session(bot)
    fake_llm.rules["坏问题"] = rule
    assert expected in bot.say("坏问题")
    assert bot.say("好问题") == "答：好问题"


@pytest.mark.slow
def test_llm_timeout_gives_a_clear_sentence(make_bot, fake_llm, mode):
    if mode == "redis":
        pytest.skip("the workers' deadline is set at their start; embedded covers the mapping")
    wechat = make_bot(MPBOT_LLM_TIMEOUT=0.3)
    in_session(wechat)
    fake_llm.rules["慢"] = Rule(latency=1.0)
    assert "超时" in wechat.say("慢")


@pytest.mark.slow
def test_dead_llm_endpoint_gives_a_clear_sentence(make_bot, mode):
    if mode == "redis":
        pytest.skip("the workers' endpoint is set at their start; embedded covers it")
    wechat = make_bot(OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    in_session(wechat)
    started = time.monotonic()
    assert "回答出错" in wechat.say("有人吗")
    assert time.monotonic() - started < 3


# The pieces the replies are built from, on inputs the chat tests do not reach.


def test_cut_never_splits_a_character_and_prefers_line_then_sentence_ends():
    assert cut("一二三四五六七八\n九十。" + "汉" * 100, 40) == "一二三四五六七八"
    assert cut("一二三四五六七。八九" + "汉" * 100, 40) == "一二三四五六七。"
    assert cut("汉" * 10, 10) == "汉" * 3  # 10 bytes hold three 3-byte characters, not three and a third
    assert cut("abc", 10) == "abc"


def test_unclosed_think_at_the_start_hides_everything():
    assert strip_think("<think>still thinking") == ""


def test_tables_and_quotes_are_flattened():
    assert markdown_to_text("| a | b |\n|---|---|\n| 1 | 2 |\n\n> 引用") == "a | b\n1 | 2\n\n引用"


def test_parts_are_the_same_whichever_part_reading_starts_from():
    text = "\n\n".join(f"第{i}段。" + "内容，" * (i * 7) + "完。" for i in range(1, 30))
    spans = paginate(text, 0, 500)
    assert len(spans) > 5 and all(utf8_len(text[start:end]) <= 500 for start, end in spans)
    for k, (start, _end) in enumerate(spans):
        assert paginate(text, start, 500) == spans[k:]
    # Nothing lost or repeated between parts (they meet at whitespace, which the cut drops).
    assert "".join("".join(text[start:end].split()) for start, end in spans) == "".join(text.split())


def test_text_still_being_written_is_cut_at_its_last_sentence_end():
    assert cut_clean("第一句。第二句。第三", 100) == "第一句。第二句。"
    assert cut_clean("段一。\n\n段二第一句。段二", 100) == "段一。\n\n段二第一句。"
    assert cut_clean("没有句号的开头", 100) == "没有句号的开头"
