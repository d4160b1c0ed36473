"""Settings: every value from settings.py, overridable by the environment, checked with clear errors."""

import pytest

from mpbot.config import load_config
from mpbot.errors import ConfigError


def test_missing_token_is_named(monkeypatch):
    with pytest.raises(ConfigError, match="WECHAT_TOKEN"):
        load_config()


def test_environment_overrides_are_parsed_to_the_setting_type(monkeypatch):
    monkeypatch.setenv("WECHAT_TOKEN", "tok")
    monkeypatch.setenv("MPBOT_SESSION_TTL", "60")
    monkeypatch.setenv("MPBOT_DELIVERY_WAIT", "4.2")
    monkeypatch.setenv("TEXTS", '{"hint": "先发 {start}"}')
    config = load_config()
    assert config.MPBOT_SESSION_TTL == 60
    assert config.MPBOT_DELIVERY_WAIT == 4.2
    assert config.text("hint", tap=False) == "先发 /chatgpt"
    assert "欢迎" in config.text("welcome")  # the other texts are kept


def test_bad_number_in_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("WECHAT_TOKEN", "tok")
    monkeypatch.setenv("MPBOT_SESSION_TTL", "five minutes")
    with pytest.raises(ConfigError, match="MPBOT_SESSION_TTL='five minutes'"):
        load_config()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"WECHAT_ENCODING_AES_KEY": "short"}, "43 characters"),
        ({"WECHAT_ENCODING_AES_KEY": "!" * 43, "WECHAT_APPID": "wx1"}, "base64"),
        ({"WECHAT_ENCODING_AES_KEY": "A" * 43}, "WECHAT_APPID"),
        ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, "SECRET_KEY"),
        ({"MPBOT_DELIVERY_WAIT": 5.0}, "MPBOT_DELIVERY_WAIT"),
        ({"MPBOT_LINK_TTL": 10**9}, "links would outlive the answers"),
        ({"NO_SUCH_SETTING": 1}, "unknown setting"),
        ({"MPBOT_PUSH": True, "WECHAT_APPID": "wx1"}, "MPBOT_PUSH is on but WECHAT_APPSECRET is not set"),
        ({"MPBOT_PUSH": True}, "WECHAT_APPID and WECHAT_APPSECRET are not set"),
        ({"TEXTS": {"hint": "发送 {begin} 开始"}}, "TEXTS\\['hint'\\]"),
    ],
)
def test_bad_settings_say_what_is_wrong(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config({"WECHAT_TOKEN": "tok", **overrides})


def test_embedded_mode_generates_a_secret_per_process():
    first, second = load_config({"WECHAT_TOKEN": "t"}), load_config({"WECHAT_TOKEN": "t"})
    assert first.embedded and len(first.SECRET_KEY) >= 32
    assert first.SECRET_KEY != second.SECRET_KEY


def test_texts_around_a_part_must_leave_room_for_the_answer():
    texts = load_config({"WECHAT_TOKEN": "t"}).TEXTS
    with pytest.raises(ConfigError, match="keep them under half"):
        load_config({"WECHAT_TOKEN": "t", "TEXTS": {**texts, "answer_label": "（本回答由 AI 生成）" * 40}})


def test_a_command_without_an_alias_or_a_push_label_too_long_says_so():
    config = load_config({"WECHAT_TOKEN": "t"})
    with pytest.raises(ConfigError, match=r"COMMANDS\['history'\] = \[\] needs one alias"):
        load_config({"WECHAT_TOKEN": "t", "COMMANDS": {**config.COMMANDS, "history": []}})
    with pytest.raises(ConfigError, match="keep them under half"):
        load_config({"WECHAT_TOKEN": "t", "TEXTS": {**config.TEXTS, "push_more": "（{part}/{parts}）" + "长" * 400}})
    with pytest.raises(ConfigError, match=r"TEXTS\['fallback'\] takes up to \d+ bytes"):
        load_config({"WECHAT_TOKEN": "t", "TEXTS": {**config.TEXTS, "fallback": "长" * 650 + "{url}"}})
