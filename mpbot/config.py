"""The one reader of ``settings.py`` and the environment.

``load_config(overrides)`` takes every UPPERCASE name of ``settings.py``, replaces it with the
environment variable of the same name when that is set (parsed to the default's type), then with
``overrides`` (tests, tools), and checks the result.
"""

import base64
import binascii
import importlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from typing import Any

from . import autoreply, texts
from .errors import ConfigError
from .guard import Proxies


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError("expected 1/0, true/false, yes/no or on/off")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, (dict, list)):
            value = json.loads(raw)
            if not isinstance(value, type(default)):
                raise ValueError(f"expected a JSON {type(default).__name__}")
            if isinstance(default, dict):
                return {**default, **value}
            return value
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={raw!r} is not valid: {exc}") from exc
    return raw


class Config:
    """Settings as attributes (``config.WECHAT_TOKEN``), read-only once loaded."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no setting named {name!r} in settings.py") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("settings are read-only; pass overrides to load_config()")

    @property
    def embedded(self) -> bool:
        return not self.REDIS_URL

    def text(self, name: str, tap: bool | None = None, **fields) -> str:
        """A text from ``TEXTS`` (its always-on form in that mode) with the command names (and
        ``fields``) filled in (see texts.py). Command names are taps in the chat's texts with
        MPBOT_TAP_LINKS, unless ``tap`` is False; never in a page's (``page_*``)."""
        tappable = self.MPBOT_TAP_LINKS if tap is None else tap
        return texts.fill(
            self.TEXTS,
            self.COMMANDS,
            name,
            tappable=tappable and not name.startswith("page_"),
            always_on=self.MPBOT_ALWAYS_ON,
            **fields,
        )

    def error_text(self, kind: str, tap: bool | None = None) -> str:
        """What the subscriber reads when an answer failed in the way ``kind`` says."""
        name = f"error_{kind}"
        return self.text(name if name in self.TEXTS else "error", tap=tap)


def load_config(overrides: Mapping[str, Any] | None = None, module: str = "settings") -> Config:
    settings = importlib.import_module(module)
    values = {name: getattr(settings, name) for name in dir(settings) if name.isupper()}
    for name, default in list(values.items()):
        if name in os.environ:
            values[name] = _parse(name, os.environ[name], default)
    for name, value in (overrides or {}).items():
        if name not in values:
            raise ConfigError(f"unknown setting {name!r}: it is not in settings.py")
        values[name] = value
    _add_rules_file(values, autoreply.rules_path(values["MPBOT_RULES_FILE"], settings.__file__))
    _check(values)
    return Config(values)


def _add_rules_file(values: dict[str, Any], path: str) -> None:
    """The rules file's rules after MPBOT_RULES; its follow reply before the welcome text, its
    default reply before the hint (the reply to a text outside a session)."""
    document = autoreply.read_rules_file(path)
    if document is None:
        return
    rules = document.get("rules", [])
    autoreply.parse_rules(rules, f"MPBOT_RULES_FILE {path}", values["MPBOT_REPLY_MAX_BYTES"])
    values["MPBOT_RULES"] = [*values["MPBOT_RULES"], *rules]
    texts_ = dict(values["TEXTS"])
    for reply, names in (("follow_reply", ("welcome", "welcome_always_on")), ("default_reply", ("hint",))):
        if document.get(reply):
            for name in names:
                if name in texts_:
                    texts_[name] = autoreply.literal(document[reply]) + "\n\n" + texts_[name]
    values["TEXTS"] = texts_


def _check(values: dict[str, Any]) -> None:
    if not values["WECHAT_TOKEN"]:
        raise ConfigError(
            "WECHAT_TOKEN is not set: set it to the Token of the WeChat admin console "
            "(设置与开发 > 基本配置 > 服务器配置), e.g. `export WECHAT_TOKEN=...`"
        )
    for name in ("WECHAT_ENCODING_AES_KEY", "WECHAT_PREVIOUS_ENCODING_AES_KEY"):
        if values[name]:
            aes_key(values[name], name)
    if values["WECHAT_ENCODING_AES_KEY"] and not values["WECHAT_APPID"]:
        raise ConfigError(
            "WECHAT_APPID is not set: safe and compatible mode need the account's AppID "
            "(设置与开发 > 基本配置), because every encrypted message carries it"
        )
    if values["MPBOT_PUSH"]:
        missing = [name for name in ("WECHAT_APPID", "WECHAT_APPSECRET") if not values[name]]
        if missing:
            raise ConfigError(
                f"MPBOT_PUSH is on but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                "pushing late answers fetches an access_token with the account's AppID and AppSecret "
                "(设置与开发 > 基本配置); set them, or turn MPBOT_PUSH off"
            )
    if values["REDIS_URL"] and not values["SECRET_KEY"]:
        raise ConfigError(
            "SECRET_KEY is not set: with REDIS_URL every process must sign answer links with the "
            "same key; generate one with `python -c 'import secrets; print(secrets.token_hex(32))'`"
        )
    if not values["SECRET_KEY"]:
        values["SECRET_KEY"] = secrets.token_hex(32)
    for name, aliases in values["COMMANDS"].items():
        if not isinstance(aliases, list) or not aliases or not all(isinstance(a, str) and a.strip() for a in aliases):
            raise ConfigError(
                f'COMMANDS[{name!r}] = {aliases!r} needs one alias at least, e.g. ["/{name}"]: the texts name the first'
            )
    autoreply.parse_rules(values["MPBOT_RULES"], "MPBOT_RULES", values["MPBOT_REPLY_MAX_BYTES"])
    if not isinstance(values["MPBOT_MENU"], dict) or not all(
        isinstance(key, str) and isinstance(reply, str) and reply.strip() for key, reply in values["MPBOT_MENU"].items()
    ):
        raise ConfigError(
            "MPBOT_MENU must map each CLICK button's EventKey to a reply text or a command, "
            'e.g. {"V1001_HELP": "/help"}'
        )
    if values["MPBOT_DELIVERY_WAIT"] >= values["MPBOT_WECHAT_TIMEOUT"]:
        raise ConfigError(
            f"MPBOT_DELIVERY_WAIT={values['MPBOT_DELIVERY_WAIT']!r} must be shorter than "
            f"MPBOT_WECHAT_TIMEOUT={values['MPBOT_WECHAT_TIMEOUT']!r}, or the last delivery "
            "answers after WeChat has gone"
        )
    if values["MPBOT_ANSWER_TTL"] < values["MPBOT_LINK_TTL"]:
        raise ConfigError(
            f"MPBOT_ANSWER_TTL={values['MPBOT_ANSWER_TTL']!r} is shorter than MPBOT_LINK_TTL="
            f"{values['MPBOT_LINK_TTL']!r}: links would outlive the answers they show"
        )
    try:
        Proxies(values["MPBOT_FORWARDED_ALLOW_IPS"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"MPBOT_FORWARDED_ALLOW_IPS={values['MPBOT_FORWARDED_ALLOW_IPS']!r} is not a list of addresses or "
            f'networks ({exc}): e.g. ["127.0.0.1", "::1"] or ["10.0.0.0/8"], as JSON in the environment'
        ) from None
    hosts = values["MPBOT_MEDIA_HOSTS"]
    if not isinstance(hosts, list) or not all(
        isinstance(host, str) and re.fullmatch(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?", host) for host in hosts
    ):
        raise ConfigError(
            f"MPBOT_MEDIA_HOSTS={hosts!r} must be a list of host names (host:port for another port), "
            'e.g. ["mmbiz.qpic.cn"], as JSON in the environment'
        )
    values["PUBLIC_URL"] = values["PUBLIC_URL"].rstrip("/")
    fields = {key: "x" for key in values["COMMANDS"]} | {name: "x" for name in texts.FIELDS} | {"part": 1, "parts": 2}
    for name, text in values["TEXTS"].items():
        try:
            text.format_map(fields)
        except (KeyError, ValueError, IndexError, AttributeError, TypeError) as exc:
            raise ConfigError(
                f"TEXTS[{name!r}] = {text!r} cannot be filled in ({exc!r}): it may use "
                f"{', '.join('{' + key + '}' for key in fields)}; write a literal brace as {{{{ or }}}}"
            ) from None
    try:
        _check_labels(values)
        _check_lengths(values)
    except KeyError as exc:
        raise ConfigError(f"TEXTS has no {exc}: a TEXTS in the environment is merged into settings.py's") from None


def _check_lengths(values: dict[str, Any]) -> None:
    """Every text the chat shows fits in one reply (a rules file's follow and default replies
    included, which go before the welcome and the hint), and so does every menu reply."""
    config = Config(values)
    limit = values["MPBOT_REPLY_MAX_BYTES"]
    sample = {
        "url": values["PUBLIC_URL"] + "/answer/" + "x" * 64,
        "part": 9999,
        "parts": 9999,
        "question": "长" * 16,
        "heard": "长" * 16,
    }
    # A text may go out with the name of the question before it and a note after it.
    extra = len(config.text("answer_quote", question="长" * 16).encode()) + max(
        (len(config.text(name).encode()) for name in values["TEXTS"] if name.startswith("note_")), default=0
    )
    for name in values["TEXTS"]:
        if not name.startswith("page_"):
            size = len(config.text(name, **sample).encode()) + extra
            if size > limit:
                where = (
                    " (with the rules file's reply before it)"
                    if name in ("welcome", "welcome_always_on", "hint")
                    else ""
                )
                raise ConfigError(
                    f"TEXTS[{name!r}]{where} takes up to {size} bytes with the question's name and a note, "
                    f"over a reply's {limit}: shorten it"
                )
    for key, reply in values["MPBOT_MENU"].items():
        if len(reply.encode()) > limit:
            raise ConfigError(
                f"MPBOT_MENU[{key!r}] takes {len(reply.encode())} bytes, over a reply's {limit}: shorten it"
            )


def _check_labels(values: dict[str, Any]) -> None:
    """What a part of a long answer carries besides the answer (its label, a note, the question's
    name, the AI label) must leave most of a reply to the answer."""
    config = Config(values)
    url = values["PUBLIC_URL"] + "/answer/" + "x" * 64
    notes = [config.text(name) for name in values["TEXTS"] if name.startswith("note_")]
    around = [
        config.text("more", part=9999, parts=9999, url=url),
        config.text("push_more", part=9999, parts=9999),
        config.text("last_part", part=9999, parts=9999) + config.text("answer_label"),
        config.text("partial", url=url),
    ]
    worst = max(len(t.encode()) for t in around) + max((len(n.encode()) for n in notes), default=0)
    worst += len(config.text("answer_quote", question="长" * 16).encode())
    if worst > values["MPBOT_REPLY_MAX_BYTES"] // 2:
        raise ConfigError(
            f"TEXTS around a part of a long answer (more, last_part, answer_label, partial, note_*, answer_quote) "
            f"take up to {worst} bytes of a {values['MPBOT_REPLY_MAX_BYTES']}-byte reply: keep them under half of it"
        )


def aes_key(encoding_aes_key: str, name: str = "WECHAT_ENCODING_AES_KEY") -> bytes:
    """The 32-byte AES key behind an EncodingAESKey, or a ConfigError that says what is wrong."""
    if len(encoding_aes_key) != 43:
        raise ConfigError(f"{name} must be the 43 characters shown in the admin console, got {len(encoding_aes_key)}")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{name} is not valid base64: {exc}") from exc
    if len(key) != 32:
        raise ConfigError(f"{name} does not decode to a 32-byte key")
    return key
