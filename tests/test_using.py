"""The account's own replies ahead of the model (keyword rules, the rules file, the console's rules
carried over by `mpbot import-rules`), replies a subscriber can tap, long answers in the fewest
replies, and the AI label: through the signed webhook, in both modes."""

import json
import os
import re
import subprocess
import sys

import pytest
import requests

from conftest import ROOT, TOKEN
from fakes import FakeWeChatAPI, Rule, body_of, link_in, text_xml
from mpbot.autoreply import AutoReplies, from_console, parse_rules
from mpbot.config import load_config
from mpbot.errors import ConfigError
from mpbot.simulator import as_seen

DATA = os.path.join(os.path.dirname(__file__), "data", "wechat-samples")
TAP = re.compile(r'<a href="weixin://bizmsgmenu\?msgmenucontent=([^&"]+)&msgmenuid=\d+">([^<]+)</a>')
RULES = [
    {"keywords": ["营业时间", "几点开门"], "reply": "每天 9:00-21:00 营业。"},
    {
        "keywords": ["地址"],
        "match": "contains",
        "reply": '我们在人民路 1 号，<a href="https://map.example.com">查看地图</a>',
    },
]


# --- keyword rules ------------------------------------------------------------------------------


def test_keyword_rules_answer_at_once_in_a_chat_or_not_with_no_model_call(make_bot, fake_llm):
    wechat = make_bot(MPBOT_RULES=RULES)
    assert wechat.say("  营业时间 ") == "每天 9:00-21:00 营业。", "exact, after trimming"
    assert wechat.say("几点开门") == "每天 9:00-21:00 营业。"
    assert wechat.say("请问店的地址在哪") == RULES[1]["reply"], "contains"
    assert wechat.say("营业时间长吗") == wechat.app.mpbot.config.text("hint"), "exact means the whole text"
    assert "对话已开始" in wechat.say("/chatgpt")
    assert wechat.say("营业时间") == "每天 9:00-21:00 营业。", "in a chat too"
    assert wechat.say("营业时间长吗") == "答：营业时间长吗"
    assert [c["messages"][-1]["content"] for c in fake_llm.calls] == ["营业时间长吗"]
    metrics = requests.get(f"{wechat.url}/metrics", timeout=5).text
    assert "mpbot_keyword_replies_total 4.0" in metrics


def test_rules_ignore_case_pick_one_of_several_replies_and_leave_commands_first():
    rules = AutoReplies(
        parse_rules([{"keywords": ["Hello"], "reply": ["a", "b"]}, {"keywords": ["/help"], "reply": "x"}], "t")
    )
    assert {rules.match(" HELLO ") for _ in range(50)} == {"a", "b"}
    assert rules.match("hello there") is None
    assert rules.match("") is None


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"keywords": ["a"]}, "must be a list"),
        ([{"keywords": [], "reply": "x"}], "keywords must be"),
        ([{"keywords": ["a"], "reply": ""}], "reply must be"),
        ([{"keywords": ["a"], "reply": "x", "match": "regex"}], "match must be one of exact, contains"),
        ([{"keywords": ["a"], "reply": "x", "typo": 1}], "unknown field"),
        ([{"keywords": ["a"], "reply": "长" * 700}], "over WeChat's 2047"),
    ],
)
def test_a_bad_rule_says_what_is_wrong_at_start(rules, message):
    with pytest.raises(ConfigError, match=message):
        load_config({"WECHAT_TOKEN": "t", "MPBOT_RULES": rules, "MPBOT_RULES_FILE": ""})


def test_a_menu_reply_or_a_rules_file_reply_too_long_for_one_message_stops_the_start(tmp_path):
    with pytest.raises(ConfigError, match="MPBOT_MENU\\['K'\\] takes 3000 bytes"):
        load_config({"WECHAT_TOKEN": "t", "MPBOT_RULES_FILE": "", "MPBOT_MENU": {"K": "长" * 1000}})
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"default_reply": "长" * 650}), encoding="utf-8")
    with pytest.raises(ConfigError, match="TEXTS\\['hint'\\] \\(with the rules file's reply before it\\)"):
        load_config({"WECHAT_TOKEN": "t", "MPBOT_RULES_FILE": str(path)})


def test_the_rules_file_adds_rules_and_the_follow_and_default_replies(make_bot, fake_llm, tmp_path):
    path = tmp_path / "rules.json"
    document = {
        "rules": [{"keywords": ["价格"], "reply": "一杯 {20} 元"}],
        "follow_reply": "感谢关注本店 {欢迎}！",
        "default_reply": "留言已收到，我们会尽快回复。",
    }
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    wechat = make_bot(MPBOT_RULES_FILE=str(path), MPBOT_RULES=RULES)
    assert wechat.say("价格") == "一杯 {20} 元"
    assert wechat.say("营业时间") == "每天 9:00-21:00 营业。", "MPBOT_RULES still apply"
    with open(os.path.join(DATA, "..", "wechat-vectors", "messages", "event_subscribe.xml"), "rb") as f:
        subscribe = f.read()
    welcome = wechat.reply_text(wechat.post(subscribe).text)
    assert welcome.startswith("感谢关注本店 {欢迎}！\n\n欢迎关注！") and "/chatgpt" in welcome
    hint = wechat.say("随便说点什么")
    assert hint.startswith("留言已收到，我们会尽快回复。\n\n") and "/chatgpt" in hint
    assert fake_llm.calls == []


def test_a_broken_rules_file_stops_the_start_with_its_path(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config({"WECHAT_TOKEN": "t", "MPBOT_RULES_FILE": str(path)})


# --- the console's rules, carried over ----------------------------------------------------------


def official_autoreply() -> dict:
    with open(os.path.join(DATA, "autoreply_info.valid.json"), encoding="utf-8") as f:
        return json.load(f)


def test_the_official_sample_of_the_consoles_rules_converts_with_what_was_left_out():
    document, skipped = from_console(official_autoreply())
    assert document["follow_reply"] == "Thanks for your attention!"
    assert document["default_reply"] == "Hello, this is autoreply!"
    assert document["rules"] == [
        {"name": "autoreply-text", "keywords": ["text测试"], "match": "contains", "reply": ["hello!text!"]}
    ]
    assert skipped == [
        "keyword rule 'autoreply-news': its replies are an article, not text",
        "keyword rule 'autoreply-voice': its replies are a voice message, not text",
        "keyword rule 'autoreply-video': its replies are a video, not text",
    ]
    parse_rules(document["rules"], "import")  # the bot loads what it wrote


@pytest.fixture
def console_api():
    fake = FakeWeChatAPI("wx-import-app", "import-secret")
    url = fake.start()
    yield fake, url
    fake.server.shutdown()
    fake.server.server_close()


def import_rules(url: str, output, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mpbot", "import-rules", "--output", str(output)],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": ROOT,
            "WECHAT_TOKEN": TOKEN,
            "WECHAT_API_BASE": url,
            "MPBOT_ENV_FILE": os.devnull,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_import_rules_writes_a_file_the_bot_answers_from(console_api, make_bot, fake_llm, tmp_path):
    fake, url = console_api
    fake.autoreply = official_autoreply()
    output = tmp_path / "rules.json"
    done = import_rules(url, output, WECHAT_APPID="wx-import-app", WECHAT_APPSECRET="import-secret")
    assert done.returncode == 0, done.stderr
    assert "not carried" in done.stdout and "keyword rule" in done.stdout
    document = json.loads(output.read_text(encoding="utf-8"))
    assert [rule["keywords"] for rule in document["rules"]] == [["text测试"]]
    wechat = make_bot(MPBOT_RULES_FILE=str(output))
    assert wechat.say("这是 TEXT测试 吗") == "hello!text!", "contains, ignoring case"
    assert (
        wechat.say("你好")
        == "Hello, this is autoreply!\n\n"
        + wechat.app.mpbot.config.text("hint")[len("Hello, this is autoreply!\n\n") :]
    )
    assert fake_llm.calls == []


def test_import_rules_never_writes_rules_that_would_stop_the_bot(console_api, tmp_path):
    fake, url = console_api
    long = "很长的回复。" * 80  # 1,440 bytes: one fits a reply, two together do not
    fake.autoreply = {
        "is_add_friend_reply_open": 1,
        "add_friend_autoreply_info": {"type": "text", "content": "欢迎！" * 220},
        "keyword_autoreply_info": {
            "list": [
                {
                    "rule_name": "两条",
                    "reply_mode": "reply_all",
                    "keyword_list_info": [{"type": "text", "match_mode": "equal", "content": "说说"}],
                    "reply_list_info": [{"type": "text", "content": long}, {"type": "text", "content": long + "二"}],
                }
            ]
        },
    }
    output = tmp_path / "rules.json"
    env = {"WECHAT_APPID": "wx-import-app", "WECHAT_APPSECRET": "import-secret"}
    refused = import_rules(url, output, **env)
    assert refused.returncode == 1 and "would stop the bot from starting" in refused.stderr
    assert "TEXTS['welcome']" in refused.stderr and not output.exists(), "the follow reply is too long to go first"
    del fake.autoreply["add_friend_autoreply_info"]
    done = import_rules(url, output, **env)
    assert done.returncode == 0, done.stderr
    assert "one is sent at random" in done.stdout
    assert json.loads(output.read_text(encoding="utf-8"))["rules"][0]["reply"] == [long, long + "二"]
    gone = import_rules(url, tmp_path / "no" / "such" / "rules.json", **env)
    assert gone.returncode == 2 and "--output" in gone.stderr
    redis_down = import_rules(url, output, **env, REDIS_URL="redis://127.0.0.1:1/0", SECRET_KEY="k" * 32)
    assert redis_down.returncode == 1 and "REDIS_URL" in redis_down.stderr and "Traceback" not in redis_down.stderr


def test_import_rules_says_what_is_missing_or_refused(console_api, tmp_path):
    fake, url = console_api
    missing = import_rules(url, tmp_path / "r.json")
    assert missing.returncode == 2 and "WECHAT_APPID and WECHAT_APPSECRET" in missing.stderr
    wrong = import_rules(url, tmp_path / "r.json", WECHAT_APPID="wx-import-app", WECHAT_APPSECRET="wrong")
    assert wrong.returncode == 1 and "AppSecret" in wrong.stderr and "wrong" not in wrong.stderr
    assert not (tmp_path / "r.json").exists()


# --- taps -------------------------------------------------------------------------------------


def taps(text: str) -> list[str]:
    return [content for content, label in TAP.findall(text) if content == label]


@pytest.mark.slow
def test_the_last_delivery_of_a_slow_answer_offers_continue_as_a_tap(bot, fake_llm):
    assert "对话已开始" in bot.say("/chatgpt")
    fake_llm.rules["难题"] = Rule(latency=3.2, content="难题的答案。")
    fallback = bot.say("难题")
    assert taps(fallback) == ["继续"] and "发送「继续」或任意消息" in as_seen(fallback)
    assert link_in(fallback).startswith("https://bot.example.com/answer/")


def test_help_and_long_answers_offer_taps_and_read_the_same_without_them(make_bot, fake_llm):
    fake_llm.rules["讲长一点"] = Rule(content=LONG)
    tapped, plain = make_bot(), make_bot(MPBOT_TAP_LINKS=False)
    help_text = tapped.say("/help")
    assert taps(help_text) == ["/chatgpt", "/stop", "/clear", "继续", "/history", "/help"]
    assert as_seen(help_text) == plain.say("/help") and "bizmsgmenu" not in plain.say("/help")
    for wechat, openid in ((tapped, "long-1"), (plain, "long-2")):  # (one store in Redis mode)
        assert "对话已开始" in wechat.say("/chatgpt", openid=openid)
    part, plain_part = tapped.say("讲长一点", openid="long-1"), plain.say("讲长一点", openid="long-2")
    assert taps(part) == ["继续"] and "bizmsgmenu" not in plain_part
    for shown in (as_seen(part), as_seen(plain_part)):
        assert re.search(r"\n\n（1/\d）发送「继续」看下一段，或查看全文 \(https://bot.example.com/answer/", shown)


def test_command_names_read_well_whichever_alias_comes_first(make_bot):
    words = {
        "start": ["开始", "/chatgpt"],
        "stop": ["结束"],
        "clear": ["清空"],
        "next": ["继续"],
        "history": ["历史"],
        "help": ["帮助"],
    }
    wechat = make_bot(COMMANDS=words, MPBOT_TAP_LINKS=False)
    assert wechat.say("帮助").startswith("可用命令：\n「开始」开始对话\n「结束」结束对话")
    assert "发送「开始」开始和 AI 对话，发送「帮助」查看命令。" == wechat.say("你好")
    assert "发送 /chatgpt 开始和 AI 对话" in make_bot(MPBOT_TAP_LINKS=False).say("你好")


# --- long answers -------------------------------------------------------------------------------

PARAGRAPHS = [f"第{i}段。" + "这一段讲一个要点，" * 10 + "讲完了。" for i in range(1, 36)]
LONG = "\n\n".join(PARAGRAPHS[:15])


def read_all(wechat, question: str, openid: str) -> list[str]:
    replies = [wechat.say(question, openid=openid)]
    while "看下一段" in replies[-1]:
        replies.append(wechat.say("继续", openid=openid))
    return replies


def test_a_3000_character_answer_takes_the_fewest_replies_the_limit_allows(bot, fake_llm):
    # Chinese prose as a model writes it: sentences of 20-60 characters in paragraphs.
    sentences = [f"这是第{i}句，" + "内容" * (8 + i % 20) + "。" for i in range(200)]
    answer = "\n\n".join("".join(sentences[i : i + 5]) for i in range(0, 200, 5))[:3000]
    fake_llm.rules["三千字"] = Rule(content=answer)
    assert "对话已开始" in bot.say("/chatgpt", openid="reader")
    replies = read_all(bot, "三千字", "reader")
    assert all(len(reply.encode()) <= 2047 for reply in replies)
    assert "".join("".join(body_of(r).split()) for r in replies) == "".join(answer.split()), "nothing lost"
    # The least any reader could manage: every byte of the answer in 2047-byte replies, with
    # the shortest label a part can carry. chatgpt-on-wechat needs 5 for this answer.
    assert len(replies) <= 5, [len(r.encode()) for r in replies]


def test_no_part_ends_on_a_heading_or_a_lead_in_and_code_keeps_its_indentation(bot, fake_llm):
    code = "\n".join(f"    step_{i} = compute({i})  # 第{i}步" for i in range(80))
    sections = []
    for n in range(1, 7):
        sections.append(
            f"## 第{n}部分\n\n" + "这一部分讲清楚一个问题，" * 12 + "。\n\n步骤如下：\n\n1. 先做一件事\n2. 再做一件事"
        )
    answer = "\n\n".join(sections) + "\n\n```python\ndef main():\n" + code + "\n```\n"
    fake_llm.rules["结构"] = Rule(content=answer)
    assert "对话已开始" in bot.say("/chatgpt", openid="struct")
    replies = read_all(bot, "结构", "struct")
    assert len(replies) > 2
    for reply in replies[:-1]:
        last_line = body_of(reply).rstrip().rsplit("\n", 1)[-1]
        assert not last_line.startswith("【") and not last_line.endswith(("：", ":")), last_line
    lines = "\n".join(body_of(r) for r in replies).splitlines()
    for i in range(80):
        assert f"    step_{i} = compute({i})  # 第{i}步" in lines, f"step {i} lost its indentation"


# --- the AI label ---------------------------------------------------------------------------------


def test_the_start_text_and_the_answer_page_say_answers_are_made_by_ai(make_bot, fake_llm):
    wechat = make_bot()
    assert "回答由 AI 生成" in wechat.say("/chatgpt")
    msgid = wechat.new_msgid()
    wechat.deliver(text_xml("问个问题", msgid))
    page = requests.get(
        wechat.app.mpbot.links.url(str(msgid)).replace("https://bot.example.com", wechat.url), timeout=5
    )
    assert page.status_code == 200 and "答：问个问题" in page.text and "回答由 AI 生成" in page.text
    texts = {**wechat.app.mpbot.config.TEXTS, "ai_label": "以上内容由人工智能生成。", "answer_label": "\n\n（AI 生成）"}
    relabelled = make_bot(TEXTS=texts)
    assert "以上内容由人工智能生成。" in relabelled.say("/chatgpt", openid="l")
    assert relabelled.say("你好", openid="l") == "答：你好\n\n（AI 生成）", "a label on every answer, when set"
