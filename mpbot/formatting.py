"""Model output made fit for a WeChat text bubble: no reasoning, no Markdown, no links of its own,
under the byte limit; and text of any origin made fit for XML."""

import bisect
import functools
import re

_THINK = re.compile(r"<think>.*?(</think>|\Z)", re.S | re.I)
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(\[[ xX]\]\s+)?")
_QUOTE = re.compile(r"^\s{0,3}>\s?")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
# Lengths are bounded so that text the model wrote cannot make a match quadratic ("![" x 15,000
# took 2 s; "[a](" x 16,000, 0.75 s): a label past 500 characters or a URL past 1,000-2,000 is
# left as it is. A link's URL may hold one level of parentheses (Wikipedia's do).
_IMAGE = re.compile(r"!\[([^\]\n]{0,500})\]\([^)\n]{0,2000}\)")
_LINK = re.compile(r"\[([^\]\n]{1,500})\]\(((?:[^\s()]|\([^\s()]{0,200}\)){1,1000}+)(?:\s+\"[^\"\n]{0,500}\")?\)")
# Emphasis stops at the first marker character, so that a line of markers ("**x " x 16,000 took
# 12 s) is read once, not once per marker: "**2*3**" keeps its asterisks.
_BOLD = re.compile(r"\*\*(?=\S)([^*\n]{1,1000}?)(?<=\S)\*\*|__(?=\S)([^_\n]{1,1000}?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)([^~\n]{1,1000}?)(?<=\S)~~")
_CODE = re.compile(r"`([^`\n]+)`")
_BLANKS = re.compile(r"\n{3,}")
# What XML 1.0 cannot carry (C0 controls other than tab, LF and CR; U+FFFE, U+FFFF; surrogates):
# in a reply, WeChat shows its error; in a page or a pushed message, the encoder fails.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# An anchor the model wrote: WeChat would show it as a link whose text can hide where it goes.
_ANCHOR = re.compile(
    r"<\s*a\b[^>]{0,500}?\bhref\s*=\s*([\"']?)([^\"'>\s]{0,2000}+)\1[^>]{0,500}+>(.{0,1000}?)<\s*/\s*a\s*>", re.I | re.S
)
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
    line = _BOLD.sub(lambda m: m.group(1) or m.group(2), line)
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


MAX_INDENT = 200  # characters of a line's indentation a part keeps at its start (code's, not a run of blanks)


def skip_space(text: str, pos: int) -> int:
    """Where the text after a cut at ``pos`` begins: past the blank lines and the spaces that
    separated it, but not past the indentation of its first line (code keeps its shape), unless
    that is over MAX_INDENT characters."""
    pos = _trim(text, pos)  # the same start whether the cut fell before or inside the blanks
    end = pos
    while end < len(text) and text[end].isspace():
        end += 1
    if end == len(text):
        return end
    newline = text.rfind("\n", pos, end)
    line_start = newline + 1 if newline >= 0 else pos if pos == 0 or text[pos - 1] == "\n" else None
    if line_start is None or end - line_start > MAX_INDENT:
        return end
    return line_start


# How much worse a cut is than one between paragraphs, by the boundary it falls on (a line, a
# sentence, a clause, a word); a cut at no boundary at all is the worst.
_COSTS = (0, 1, 3, 6, 20)
_ANYWHERE = 100
_OPTIONS = 6  # ends of each kind weighed for one part


class _Text:
    """A text indexed once, so that planning its parts is linear in its length: where each
    line starts and its indentation ends, and for each position the last non-blank before it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.bodies = [m.end() for m in re.finditer(r"(?m)^[ \t]*", text)]  # first non-blank, per line
        self.trimmed = [0] * (len(text) + 1)  # position -> after the last non-blank before it
        last = 0
        for i, ch in enumerate(text):
            self.trimmed[i] = last
            if not ch.isspace():
                last = i + 1
        self.trimmed[len(text)] = last
        self.following: dict[int, int] = {}

    def index(self, pos: int) -> int:
        return bisect.bisect_right(self.starts, pos) - 1

    def lead_in(self, end: int) -> bool:
        """Whether the line that ends at ``end`` is a heading (【…】, as markdown_to_text writes
        them) or introduces what follows (it ends with a colon): no part ends on one."""
        end = self.trimmed[end]
        if end == 0:
            return False
        last = self.text[end - 1]
        if last in "：:":
            return True
        return last == "】" and self.text[self.bodies[self.index(end - 1)]] == "【"

    def indenting(self, end: int) -> bool:
        """Whether ``end`` falls inside a line's indentation (a cut there loses the rest of it)."""
        line = self.index(end)
        return self.starts[line] < end <= self.bodies[line]

    def after(self, end: int) -> int:
        """Where the part after a cut at ``end`` begins (skip_space, remembered per blank run)."""
        key = self.trimmed[end]
        if key not in self.following:
            self.following[key] = skip_space(self.text, key)
        return self.following[key]


def _cuts(indexed: _Text) -> dict[int, int]:
    """Where a part may end (the position after the boundary), and what it costs there; one cut
    per run of blanks."""
    text = indexed.text
    cuts: dict[int, int] = {}
    for cost, boundary in zip(_COSTS, _BOUNDARIES, strict=True):
        for m in boundary.finditer(text):
            end = m.end() if cost else m.start()  # a paragraph's part ends before its blank line
            if cost == _COSTS[-1] and m.start() > 0 and text[m.start() - 1].isspace():
                continue  # inside a run of blanks: its first one stands for it
            if 0 < end < len(text) and end not in cuts and not indexed.lead_in(end) and not indexed.indenting(end):
                cuts[end] = cost
    return cuts


@functools.lru_cache(maxsize=64)
def _plan(text: str, budget: int, last_budget: int):
    """The fewest parts for every start of ``text``: ``solve(start, first)`` returns (parts, cost,
    end of the first part), ``first`` the budget of that first part. Cached per text, so that each
    delivery of a long answer does not plan it again."""
    sizes = [0]
    for ch in text:
        sizes.append(sizes[-1] + utf8_len(ch))
    indexed = _Text(text)
    cuts = _cuts(indexed)
    ends = sorted(cuts)
    by_kind: dict[int, list[int]] = {}
    for end in ends:
        by_kind.setdefault(cuts[end], []).append(end)
    memo: dict[tuple[int, int], tuple[int, int, int]] = {}

    def fits(start: int, end: int, room: int) -> bool:
        return sizes[indexed.trimmed[end]] - sizes[start] <= room

    def reach(start: int, room: int) -> int:
        """The furthest end of a part from ``start`` within ``room`` bytes (one character at least)."""
        return max(start + 1, bisect.bisect_right(sizes, sizes[start] + room, start, len(text) + 1) - 1)

    def hard(start: int, first: int) -> int:
        """The furthest end at no boundary for a part that is not the last (it may not take the
        end: the last part's room is its own), and not inside a line's indentation."""
        furthest = min(reach(start, first), len(text) - 1)
        line_start = indexed.starts[indexed.index(furthest)]
        if indexed.indenting(furthest) and line_start > start:
            furthest = line_start
        return max(furthest, start + 1)

    def solve(start: int, first: int) -> tuple[int, int, int]:
        if (start, first) in memo:
            return memo[(start, first)]
        # Along a stretch with no boundary, the starts ahead are solved first, from the last
        # back: no recursion as deep as the stretch is long.
        chain, at = [], start
        while at < len(text) and (at, budget) not in memo and not fits(at, len(text), last_budget):
            chain.append(at)
            at = indexed.after(hard(at, budget))
        for at in reversed(chain[1:]):
            _solve(at, budget)
        return _solve(start, first)

    def _solve(start: int, first: int) -> tuple[int, int, int]:
        key = (start, first)
        if key in memo:
            return memo[key]
        last_room = last_budget - (budget - first)
        if start >= len(text) or fits(start, len(text), last_room):
            memo[key] = (1, 0, len(text))
            return memo[key]
        furthest = hard(start, first)
        # The furthest few of each kind, and the furthest of all at no boundary: the fewest parts
        # first, then the best boundaries among plans with that many.
        options = [] if furthest in cuts else [(_ANYWHERE, furthest)]
        for kind, of_kind in by_kind.items():
            lo, hi = bisect.bisect_right(of_kind, start), bisect.bisect_right(of_kind, furthest)
            while lo < hi and indexed.trimmed[of_kind[lo]] <= start:  # a part holds more than blanks
                lo += 1
            options.extend((kind, end) for end in of_kind[max(lo, hi - _OPTIONS) : hi])
        best = None
        for kind, end in options:
            parts, cost, _ = solve(indexed.after(end), budget)
            option = (parts + 1, cost + kind, -end)
            if best is None or option < best:
                best = option
        memo[key] = (best[0], best[1], -best[2])
        return memo[key]

    # Bottom up, so that no start recurses further than the next one.
    for end in reversed(ends):
        solve(indexed.after(end), budget)
    return solve, indexed


def _trim(text: str, end: int) -> int:
    """``end`` moved back over the whitespace before it."""
    while end > 0 and text[end - 1].isspace():
        end -= 1
    return end


def paginate(
    text: str, start: int, max_bytes: int, last_bytes: int | None = None, first_bytes: int | None = None
) -> list[tuple[int, int]]:
    """``text[start:]`` in the fewest parts that fit, as (start, end) spans: each part at most
    ``max_bytes`` (the last ``last_bytes``, the first ``first_bytes``), and among plans with that
    many parts, the one whose cuts fall on the best boundaries (a paragraph, a line, a sentence, a
    clause, a word, anywhere), never after a heading or a line that introduces a list. The plan of
    each start depends only on the text after it, so paginating from any part's start gives the
    same later parts. (A part holds one character at least, whatever the room.)"""
    last_bytes = max(max_bytes if last_bytes is None else last_bytes, 4)
    first = max(max_bytes if first_bytes is None else first_bytes, 4)
    max_bytes = max(max_bytes, 4)
    text = text[: _trim(text, len(text))]  # (the spans are the same in the text with its end blank)
    solve, indexed = _plan(text, max_bytes, last_bytes)
    spans = []
    pos = skip_space(text, start)
    while pos < len(text):
        _, _, end = solve(pos, first)
        spans.append((pos, max(indexed.trimmed[end], pos)))
        pos, first = indexed.after(end), max_bytes
    return spans
