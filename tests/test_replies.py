"""What the subscriber reads: within the byte limit, cut cleanly, readable, never WeChat's error."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_emphasis_links_and_parentheses_in_urls_read_as_plain_text():
    assert markdown_to_text("**粗体**、__粗__、~~删~~ 和 *斜*") == "粗体、粗、删 和 斜"
    assert (
        markdown_to_text('见[维基](https://zh.wikipedia.org/wiki/Python_(编程)) 和 [官网](https://python.org "标题")')
        == "见维基 (https://zh.wikipedia.org/wiki/Python_(编程)) 和 官网 (https://python.org)"
    )
    # A marker inside emphasis keeps the text as written rather than guess where it ends.
    assert markdown_to_text("**2*3** 等于 6") == "**2*3** 等于 6"


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


def fewest(text: str, budget: int, last: int, first: int) -> int:
    """The parts it takes when a part may end anywhere: each as full as it can be."""
    data, parts, room = text.strip().encode(), 0, first
    while data:
        parts += 1
        if len(data) <= last - (budget - room):
            return parts
        head = data[: min(room, len(data) - 1)].decode("utf-8", "ignore").encode() or data[:1]  # not the last
        data, room = data[len(head) :].lstrip(), budget
    return parts


LINES = st.sampled_from(
    [
        "这是一句话。",
        "短句，",
        "【标题】",
        "步骤如下：",
        "1. 第一步",
        "    indented_code(1)",
        "word " * 7,
        "",
        "长" * 40,
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(LINES, min_size=1, max_size=120), st.integers(60, 400), st.integers(0, 40), st.integers(-40, 40))
def test_parts_fit_lose_nothing_and_are_the_same_from_any_part(lines, budget, less_first, more_last):
    text = "\n".join(lines)
    first, last = budget - less_first, budget + more_last
    spans = paginate(text, 0, budget, last_bytes=last, first_bytes=first)
    for k, (start, end) in enumerate(spans):
        room = last if k == len(spans) - 1 else budget
        room -= (budget - first) if k == 0 else 0
        assert utf8_len(text[start:end]) <= room, (k, text[start:end])
        if k:
            assert paginate(text, start, budget, last_bytes=last) == spans[k:], "a later part's plan is its own"
    assert "".join("".join(text[s:e].split()) for s, e in spans) == "".join(text.split()), "nothing lost"
    if not any(line[:1].isspace() for line in lines):  # (indentation is never cut into)
        assert len(spans) <= fewest(text, budget, last, first), "more parts than cutting anywhere would take"
    for start, _end in spans:  # a part that begins a line begins with its indentation
        line_start = text.rfind("\n", 0, start) + 1
        assert start == line_start or text[line_start:start].strip(), "indentation dropped"


def test_a_part_never_ends_on_a_heading_or_the_line_before_a_list():
    text = "\n".join(
        ["【第一部分】", "内容。" * 10, "步骤如下：", "1. 做这个", "2. 做那个", "【第二部分】", "内容。" * 10]
    )
    for budget in range(60, 200, 7):
        for start, end in paginate(text, 0, budget)[:-1]:
            last_line = text[start:end].rsplit("\n", 1)[-1]
            assert not last_line.startswith("【") and not last_line.endswith("："), (budget, last_line)


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("字" * 607 + "\n　　" + "字" * 675, 1825),  # a paragraph indented with ideographic spaces
        ("a\n" + " " * 3000 + "b", 1900),  # indentation longer than a part
        ("开头。" + " " * 30000 + "结尾。", 1825),  # long runs of blanks: linear, not quadratic
        ("开头。" + " \n" * 15000 + "结尾", 1825),
        ("x" * 64000, 40),  # no boundary at all, many parts: no recursion as deep as the text
        ("abc:\n" * 12800, 50),  # every line a lead-in
        ("\n.", 4),
        ("😀" * 500, 1),  # a room smaller than one character: a character a part
    ],
    ids=["ideographic indent", "huge indent", "spaces", "blank lines", "no boundary", "colons", "tiny", "emoji"],
)
def test_odd_texts_are_paginated_quickly_and_consistently(text, budget):
    started = time.monotonic()
    spans = paginate(text, 0, budget)
    assert time.monotonic() - started < 1.0
    assert all(start <= end for start, end in spans)
    assert "".join("".join(text[s:e].split()) for s, e in spans) == "".join(text.split())
    for k in (1, len(spans) // 2, len(spans) - 1):
        if 0 < k < len(spans):
            assert paginate(text, spans[k][0], budget) == spans[k:]
