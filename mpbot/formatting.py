"""Model output made fit for a WeChat text bubble: no reasoning, no Markdown, no links of its own,
under the byte limit; and text of any origin made fit for XML."""

import re

_THINK = re.compile(r"<think>.*?(</think>|\Z)", re.S | re.I)
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(\[[ xX]\]\s+)?")
_QUOTE = re.compile(r"^\s{0,3}>\s?")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\((\S+?)(?:\s+\"[^\"]*\")?\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_CODE = re.compile(r"`([^`\n]+)`")
_BLANKS = re.compile(r"\n{3,}")
# What XML 1.0 cannot carry (C0 controls other than tab, LF and CR; U+FFFE, U+FFFF; surrogates):
# in a reply, WeChat shows its error; in a page or a pushed message, the encoder fails.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# An anchor the model wrote: WeChat would show it as a link whose text can hide where it goes.
_ANCHOR = re.compile(r"<\s*a\b[^>]*?\bhref\s*=\s*([\"']?)([^\"'>\s]*)\1[^>]*>(.*?)<\s*/\s*a\s*>", re.I | re.S)
_TAG_A = re.compile(r"<(?=\s*/?\s*a\b)", re.I)
# Where a cut may fall, best first: a paragraph, a line, a sentence, a clause, a word.
_BOUNDARIES = (
    re.compile(r"\n\s*\n"),
    re.compile(r"\n"),
    re.compile(r"[。！？!?…]+[”’」』）)]*|[.](?=\s)"),
    re.compile(r"[；;，,、：:]"),
    re.compile(r"\s"),
)


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry."""
    return _NOT_XML.sub("", text)


def no_anchors(text: str) -> str:
    """Model text with no ``<a>`` WeChat would render: ``<a href="u">label</a>`` becomes
    ``label (u)``, and any other ``<a`` or ``</a`` loses its ``<`` to a look-alike ＜. Only the
    bot's own texts (``TEXTS``) carry links."""

    def plain(m: re.Match) -> str:
        label, url = _TAG_A.sub("＜", m.group(3)).strip(), m.group(2)
        return label if not url or label == url else f"{label} ({url})"

    return _TAG_A.sub("＜", _ANCHOR.sub(plain, text))


def strip_think(text: str) -> str:
    """Remove the ``<think>…</think>`` reasoning some models put before their answer."""
    return _THINK.sub("", text).strip()


def _inline(line: str) -> str:
    line = no_anchors(line)
    line = _IMAGE.sub(lambda m: m.group(1), line)
    line = _LINK.sub(lambda m: m.group(1) if m.group(1) == m.group(2) else f"{m.group(1)} ({m.group(2)})", line)
    line = _BOLD.sub(r"\2", line)
    line = _STRIKE.sub(r"\1", line)
    line = _ITALIC.sub(r"\1", line)
    # Again: taking the emphasis out of "<**a** href=...>" makes an anchor of what was none.
    return no_anchors(_CODE.sub(r"\1", line))


def markdown_to_text(markdown: str) -> str:
    """Markdown as plain text that reads well in WeChat: headings in 【】, bullets as •, code kept
    as it is (without its fences), emphasis and link syntax dropped, and no link the model wrote
    as HTML."""
    out: list[str] = []
    in_code = False
    for line in xml_safe(markdown).replace("\r\n", "\n").split("\n"):
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:  # as written, but with no anchor WeChat would render
            out.append(_TAG_A.sub("＜", line))
            continue
        if _RULE.match(line) or _TABLE_SEP.match(line):
            continue
        heading = _HEADING.match(line)
        if heading:
            out.append(f"【{_inline(heading.group(1))}】")
            continue
        line = _QUOTE.sub("", line)
        line = _BULLET.sub(lambda m: f"{m.group(1)[: len(m.group(1)) // 2]}• ", line)
        if line.lstrip().startswith("|") and line.rstrip().endswith("|"):
            line = " | ".join(cell.strip() for cell in line.strip().strip("|").split("|"))
        out.append(_inline(line))
    # And over the whole text, so that no "<" at a line's end and "a" at the next line's start
    # make one either.
    return _TAG_A.sub("＜", _BLANKS.sub("\n\n", "\n".join(out)).strip())


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def cut(text: str, max_bytes: int) -> str:
    """The longest head of ``text`` within ``max_bytes`` of UTF-8 that ends at a clean boundary
    (paragraph, line, sentence, clause, word, in that order of preference, as long as the head
    keeps at least half the room), never inside a character."""
    if utf8_len(text) <= max_bytes:
        return text
    head = text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
    floor = len(head) // 2
    for boundary in _BOUNDARIES:
        ends = [m.end() for m in boundary.finditer(head) if m.end() > floor]
        if ends:
            return head[: ends[-1]].rstrip()
    return head


def cut_clean(text: str, max_bytes: int) -> str:
    """Like ``cut``, but for text that is still being written: it also drops an unfinished last
    sentence when the text fits (keeping it only when there is no sentence end at all)."""
    head = cut(text, max_bytes)
    ends = [m.end() for boundary in _BOUNDARIES[:3] for m in boundary.finditer(head)]
    return head[: max(ends)].rstrip() if ends else head


def skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def paginate(text: str, start: int, max_bytes: int) -> list[tuple[int, int]]:
    """``text[start:]`` in parts of at most ``max_bytes``, each cut cleanly, as (start, end)
    spans. Greedy from the front, so paginating from any part's start gives the same later parts."""
    spans = []
    pos = skip_space(text, start)
    while pos < len(text):
        head = cut(text[pos:], max_bytes) or text[pos]
        spans.append((pos, pos + len(head)))
        pos = skip_space(text, pos + len(head))
    return spans
