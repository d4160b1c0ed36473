"""The answer page and the history page: Markdown made safe HTML, and what each page shows.

Markdown goes through markdown-it-py with raw HTML turned off, so ``<script>`` or ``<img
onerror>`` in an answer is shown as text, and its link check refuses ``javascript:`` and
``data:`` URLs. Images become links (an answer must not make the reader's phone fetch from
anywhere), and every link opens without a Referer. The pages also carry a Content-Security-Policy
that lets only their own nonce'd script run.
"""

import html
import secrets
import threading
import time
from collections import OrderedDict

from markdown_it import MarkdownIt

from . import green
from .answers import Answer
from .formatting import xml_safe


def _markdown() -> MarkdownIt:
    md = MarkdownIt("js-default")  # CommonMark + tables + strikethrough, raw HTML off

    def link_open(renderer, tokens, idx, options, env):
        tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
        return renderer.renderToken(tokens, idx, options, env)

    def image(renderer, tokens, idx, options, env):
        token = tokens[idx]
        alt = html.escape(token.content or token.attrGet("src") or "")
        src = html.escape(token.attrGet("src") or "", quote=True)
        return f'<a href="{src}" rel="nofollow noopener noreferrer">[{alt}]</a>'

    md.add_render_rule("link_open", link_open)
    md.add_render_rule("image", image)
    return md


_MD = _markdown()


def markdown_html(text: str) -> str:
    """Markdown (from the model) as HTML that is safe to put in the page (and to encode: no
    lone surrogates). Rendered off the event loop (see off_the_loop); a text that was slow to
    render is remembered, so reloading its page costs nothing."""
    text = xml_safe(text)
    with _SLOW_LOCK:
        cached = _SLOW.get(text)
        if cached is not None:
            _SLOW.move_to_end(text)
            return cached
    if len(text) <= INLINE_RENDER:  # milliseconds at most, whatever its shape: not worth a queue
        return _MD.render(text)
    started = time.monotonic()
    rendered = off_the_loop(_MD.render, text)
    if time.monotonic() - started >= SLOW_RENDER:
        with _SLOW_LOCK:
            _SLOW[text] = rendered
            while len(_SLOW) > SLOW_KEPT:
                _SLOW.popitem(last=False)
    return rendered


# Texts up to this many characters are rendered where they are asked for (markdown-it takes up to
# 70 ms per 1,000 characters of the slowest shapes found).
INLINE_RENDER = 500
# Renders that took this long (seconds) are kept, the last SLOW_KEPT of them, in each process.
SLOW_RENDER = 0.05
SLOW_KEPT = 32
_SLOW: OrderedDict[str, str] = OrderedDict()
_SLOW_LOCK = threading.Lock()


def off_the_loop(work, *args):
    """``work(*args)`` in the pages' own real threads under gevent (see ``green.off_the_loop``):
    text the model wrote to be slow to render holds up pages, not every request."""
    return green.off_the_loop("render", work, *args)


def status_text(config, answer: Answer) -> str:
    if answer.failed:
        return config.error_text(answer.final["kind"], tap=False)
    return config.text(f"page_{answer.state}")


def view(config, answer: Answer, cursor: str) -> dict:
    """What the page shows of an answer, for the template and for the page's live updates."""
    return {
        "state": answer.state,
        "html": markdown_html(answer.text) if answer.text else "",
        "status": status_text(config, answer),
        "cursor": cursor,
        "live": answer.state in ("queued", "generating"),
    }


def nonce() -> str:
    return secrets.token_urlsafe(16)


def headers(script_nonce: str = "") -> dict[str, str]:
    script = f"'nonce-{script_nonce}'" if script_nonce else "'none'"
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-store",
        # The token in the URL is the key to the page: never send it on as a Referer.
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": (
            f"default-src 'none'; script-src {script}; style-src 'unsafe-inline'; connect-src 'self'; "
            "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
    }
