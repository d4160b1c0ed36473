"""The account's own replies, ahead of the model: keyword rules (``MPBOT_RULES`` and the rules
file), and what ``python -m mpbot import-rules`` carries over from the console.

Developer mode switches off the console's 自动回复 (keyword replies, the reply to any message,
the reply on following). ``from_console`` turns the console's rules, as
``/cgi-bin/get_current_autoreply_info`` returns them, into a rules file; only text replies can
be carried (a passive reply here is one text), and it says which rules it left out and why.
"""

import json
import os
import random
from dataclasses import dataclass

from .errors import ConfigError
from .formatting import utf8_len

MATCHES = ("exact", "contains")


@dataclass(frozen=True)
class Rule:
    keywords: tuple[str, ...]  # trimmed, case-folded
    match: str  # "exact" or "contains"
    replies: tuple[str, ...]  # one is picked at random

    def matches(self, text: str) -> bool:
        if self.match == "exact":
            return text in self.keywords
        return any(keyword in text for keyword in self.keywords)


def _normal(text: str) -> str:
    return text.strip().casefold()


def parse_rules(raw, where: str, max_bytes: int = 2047) -> list[Rule]:
    """``raw`` (a list of rule objects, from ``where``) as rules; ConfigError naming the first one
    that is not a rule."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where} must be a list of rules, got {type(raw).__name__}")
    rules = []
    for number, item in enumerate(raw, start=1):
        what = f"{where}, rule {number}"
        if not isinstance(item, dict):
            raise ConfigError(f'{what} must be an object like {{"keywords": ["价格"], "reply": "..."}}')
        unknown = set(item) - {"keywords", "match", "reply", "name"}
        if unknown:
            raise ConfigError(f"{what} has unknown field(s) {sorted(unknown)}: keywords, match, reply, name")
        keywords = item.get("keywords")
        if isinstance(keywords, str):
            keywords = [keywords]
        if (
            not isinstance(keywords, list)
            or not all(isinstance(k, str) and k.strip() for k in keywords)
            or not keywords
        ):
            raise ConfigError(f"{what}: keywords must be a non-empty list of non-empty texts")
        match = item.get("match", "exact")
        if match not in MATCHES:
            raise ConfigError(f"{what}: match must be one of {', '.join(MATCHES)}, got {match!r}")
        replies = item.get("reply")
        if isinstance(replies, str):
            replies = [replies]
        if not isinstance(replies, list) or not replies or not all(isinstance(r, str) and r.strip() for r in replies):
            raise ConfigError(f"{what}: reply must be a text, or a list of texts to pick one from at random")
        for reply in replies:
            if utf8_len(reply) > max_bytes:
                raise ConfigError(f"{what}: a reply of {utf8_len(reply)} bytes is over WeChat's {max_bytes}")
        rules.append(Rule(tuple(_normal(k) for k in keywords), match, tuple(replies)))
    return rules


class AutoReplies:
    """The keyword rules, exact ones first, then the others in the order given."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = [r for r in rules if r.match == "exact"] + [r for r in rules if r.match != "exact"]

    @classmethod
    def of(cls, config) -> "AutoReplies":
        return cls(parse_rules(config.MPBOT_RULES, "MPBOT_RULES", config.MPBOT_REPLY_MAX_BYTES))

    def match(self, text: str) -> str | None:
        """The reply to ``text``, or None when no rule matches."""
        text = _normal(text)
        if not text:
            return None
        for rule in self.rules:
            if rule.matches(text):
                return random.choice(rule.replies)  # noqa: S311 (which of the admin's replies: no secret)
        return None


# --- the rules file ------------------------------------------------------------------------------


def rules_path(setting: str, settings_file: str) -> str:
    """MPBOT_RULES_FILE as a path: a relative one is taken from the settings file's folder."""
    if not setting or os.path.isabs(setting):
        return setting
    return os.path.join(os.path.dirname(os.path.abspath(settings_file)), setting)


def read_rules_file(path: str) -> dict | None:
    """The rules file as written by ``import-rules`` (None when there is none); ConfigError when
    it cannot be read."""
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"MPBOT_RULES_FILE {path} cannot be read: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f'MPBOT_RULES_FILE {path} must hold a JSON object: {{"rules": [...]}}')
    for name in ("follow_reply", "default_reply"):
        if not isinstance(document.get(name, ""), str):
            raise ConfigError(f"MPBOT_RULES_FILE {path}: {name} must be a text")
    return document


def literal(text: str) -> str:
    """``text`` as part of a TEXTS entry: its braces are not fields."""
    return text.replace("{", "{{").replace("}", "}}")


# --- from the console ---------------------------------------------------------------------------

_KINDS = {"img": "an image", "news": "an article", "voice": "a voice message", "video": "a video"}


def _console_text(info: dict | None) -> str | None:
    if isinstance(info, dict) and info.get("type") == "text" and isinstance(info.get("content"), str):
        return info["content"].strip() or None
    return None


def from_console(info: dict) -> tuple[dict, list[str]]:
    """The rules file for the console's rules (``get_current_autoreply_info``'s answer), and a
    line for each rule or reply that could not be carried."""
    skipped: list[str] = []
    document: dict = {"rules": []}
    for name, switch, key, what in (
        (
            "follow_reply",
            "is_add_friend_reply_open",
            "add_friend_autoreply_info",
            "the reply on following (被关注回复)",
        ),
        (
            "default_reply",
            "is_autoreply_open",
            "message_default_autoreply_info",
            "the reply to any message (收到消息回复)",
        ),
    ):
        reply = info.get(key)
        if info.get(switch) and reply:
            text = _console_text(reply)
            if text:
                document[name] = text
            else:
                skipped.append(f"{what} is {_KINDS.get(reply.get('type'), 'not text')}")
    keyword_rules = (info.get("keyword_autoreply_info") or {}).get("list") or []
    for number, rule in enumerate(keyword_rules, start=1):
        name = rule.get("rule_name") or f"rule {number}"
        keywords = [k for k in rule.get("keyword_list_info") or [] if isinstance(k, dict)]
        texts = [_console_text(r) for r in rule.get("reply_list_info") or [] if isinstance(r, dict)]
        left_out = [r.get("type") for r in rule.get("reply_list_info") or [] if _console_text(r) is None]
        long = [t for t in texts if t and utf8_len(t) > 2047]
        if long:
            skipped.append(f"keyword rule {name!r}: {len(long)} text repl(ies) over WeChat's 2047 bytes")
        carried = [t for t in texts if t and utf8_len(t) <= 2047]
        if not carried:
            kinds = ", ".join(sorted({_KINDS.get(k, str(k)) for k in left_out})) or "nothing"
            skipped.append(f"keyword rule {name!r}: its replies are {kinds}, not text")
            continue
        if left_out:
            kinds = ", ".join(sorted({_KINDS.get(k, str(k)) for k in left_out}))
            skipped.append(f"keyword rule {name!r}: carried its text replies only, not {kinds}")
        # reply_all sends every reply; one passive reply can hold one text, so they are joined
        # (or, when together they are too long for one reply, one of them is picked).
        reply = carried
        if rule.get("reply_mode") == "reply_all" and len(carried) > 1:
            joined = "\n\n".join(carried)
            if utf8_len(joined) <= 2047:
                reply = [joined]
            else:
                skipped.append(f"keyword rule {name!r}: its replies are too long together, one is sent at random")
        for match in MATCHES:
            mode = "contain" if match == "contains" else "equal"
            words = [
                k["content"] for k in keywords if k.get("match_mode") == mode and str(k.get("content", "")).strip()
            ]
            if words:
                document["rules"].append({"name": name, "keywords": words, "match": match, "reply": reply})
        if not any(k.get("match_mode") in ("contain", "equal") for k in keywords):
            skipped.append(f"keyword rule {name!r}: no keyword to match")
    return document, skipped
