"""How the bot's own texts (``TEXTS``) are filled in: command names that read well whichever
alias comes first, taps that send a command, the always-on wording, and the AI label.

A command field (``{start}``, ``{next}``, ...) becomes the command's first alias, written so that
the sentence reads well either way: a word in 「」 (发送「继续」), anything else between spaces
(发送 /chatgpt 开始). In the chat, with ``MPBOT_TAP_LINKS``, the name is also a
``weixin://bizmsgmenu`` link: one tap sends it as the subscriber's message. Pages never get the
link (a browser cannot send a WeChat message); the wording is the same without it.
"""

import html
import re

_UNSAFE = {c: f"%{ord(c):02X}" for c in "%\"&<>#'+ \t\n"}
# A text for the always-on mode (MPBOT_ALWAYS_ON) is the one named with this after it, if any.
ALWAYS_ON = "_always_on"
# Fields every text may use besides the command names.
FIELDS = ("url", "part", "parts", "question", "ai_label", "heard")

_SPACES_AT_EDGES = re.compile(r"(?m)^[ \t]+|[ \t]+$")
_SPACES = re.compile(r"(?<=\S) {2,}(?=\S)")
# No space beside full-width punctuation: 发送 /chatgpt ，→ 发送 /chatgpt，
_SPACE_BEFORE = re.compile(r" +(?=[，。！？：；、）」』”])")
_SPACE_AFTER = re.compile(r"(?<=[，。！？：；、（「『“」』]) +")
# A text written for the old wording (「{next}」) with a word alias: one pair of quotes.
_DOUBLE_QUOTES = re.compile(r"「(「[^「」]*」)」")


def tap(content: str, menu_id: int, label: str | None = None) -> str:
    """A link that sends ``content`` as the subscriber's message when tapped (WeChat's
    ``bizmsgmenu``; what it shows is ``label``, by default ``content``)."""
    # As WeChat's own examples write it: the content raw (继续, not %E7%BB...), and only what
    # would end the attribute or the parameter percent-encoded.
    content_param = "".join(_UNSAFE.get(c, c) for c in content)
    href = f"weixin://bizmsgmenu?msgmenucontent={content_param}&msgmenuid={menu_id}"
    return f'<a href="{href}">{html.escape(label if label is not None else content)}</a>'


def command_field(alias: str, menu_id: int, tappable: bool) -> str:
    """A command's name as it stands in a sentence."""
    name = tap(alias, menu_id) if tappable else alias
    if any(ord(c) > 0x2E7F for c in alias):  # CJK: a word of the sentence, in 「」
        return f"「{name}」"
    return f" {name} "


def tidy(text: str) -> str:
    """A filled-in text without the spaces a command field left at a line's edge, twice over, or
    beside full-width punctuation."""
    text = _DOUBLE_QUOTES.sub(r"\1", text)
    text = _SPACE_BEFORE.sub("", _SPACE_AFTER.sub("", text))
    return _SPACES.sub(" ", _SPACES_AT_EDGES.sub("", text))


def fill(
    texts: dict[str, str], commands: dict[str, list[str]], name: str, *, tappable: bool, always_on: bool, **fields
) -> str:
    """``texts[name]`` (its always-on form in that mode) with every field filled in."""
    if always_on and name + ALWAYS_ON in texts:
        name += ALWAYS_ON
    names = {
        key: command_field(aliases[0], number, tappable)
        for number, (key, aliases) in enumerate(commands.items(), start=1)
        if aliases
    }
    values = {"ai_label": texts.get("ai_label", ""), **names, **fields}
    return tidy(texts[name].format_map(values))
