"""The OpenAI-compatible client, and the prompt it is sent.

Every failure of the endpoint leaves here as ``LLMError`` with a ``kind`` that the bot has a
sentence for (``TEXTS["error_<kind>"]``, or ``TEXTS["error"]``; see errors.py).
"""

import logging
import random
import re
import threading
import time

import openai

from .errors import LLMError, StoreError
from .formatting import strip_think, xml_safe

log = logging.getLogger(__name__)


def build_messages(
    system: str, history: list[dict[str, str]], question: str, budget: int, picture: str | None = None
) -> list[dict]:
    """System prompt, then as many of the latest whole turns as fit in ``budget`` characters,
    oldest first, then the question, with ``picture`` (a ``data:`` URL) as an image part. Characters
    XML cannot carry are left out of every turn, so a history kept by an older release cannot break
    the request."""
    turns: list[dict[str, str]] = []
    used = 0
    for turn in reversed(history):
        size = len(turn["q"]) + len(turn["a"])
        if used + size > budget:
            break
        used += size
        turns[:0] = [
            {"role": "user", "content": xml_safe(turn["q"])},
            {"role": "assistant", "content": xml_safe(turn["a"])},
        ]
    messages = [{"role": "system", "content": system}] if system else []
    content: str | list = xml_safe(question)
    if picture is not None:
        content = [{"type": "text", "text": content}, {"type": "image_url", "image_url": {"url": picture}}]
    return [*messages, *turns, {"role": "user", "content": content}]


RETRYABLE = ("rate_limited", "unavailable", "unreachable", "stalled")


def _retry_after(exc: Exception) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None


_DATA_URL = re.compile(r"data:[^\s\"',}\]]+")
DETAIL_CHARS = 300


def clean_detail(text: str) -> str:
    """An endpoint's error text fit for a log line: a picture it repeats back (a ``data:`` URL)
    left out, and at most ``DETAIL_CHARS`` characters."""
    text = _DATA_URL.sub("data:…", text)
    return text if len(text) <= DETAIL_CHARS else text[:DETAIL_CHARS] + "…"


def llm_error(exc: Exception) -> LLMError:
    """The ``LLMError`` an exception from the OpenAI client (or its HTTP library) stands for."""
    error = _llm_error(exc)
    error = LLMError(error.kind, clean_detail(error.detail))
    error.retry_after = _retry_after(exc)
    return error


def _llm_error(exc: Exception) -> LLMError:
    if isinstance(exc, openai.APITimeoutError):
        return LLMError("timeout", str(exc))
    if isinstance(exc, openai.APIConnectionError):
        return LLMError("unreachable", str(exc))
    if isinstance(exc, openai.RateLimitError):
        return LLMError("rate_limited", str(exc))
    if isinstance(exc, openai.AuthenticationError):
        return LLMError("auth", "the endpoint refused OPENAI_API_KEY")
    if isinstance(exc, openai.APIStatusError):
        kind = "unavailable" if exc.status_code >= 500 else "bad_request"
        return LLMError(kind, f"HTTP {exc.status_code}: {exc.message}")
    if isinstance(exc, openai.OpenAIError):
        return LLMError("unavailable", f"{exc.__class__.__name__}: {exc}")
    return LLMError("unavailable", f"stream broken: {exc.__class__.__name__}: {exc}")


class LLM:
    def __init__(self, config) -> None:
        self.model = config.MPBOT_MODEL
        self.max_tokens = config.MPBOT_MAX_TOKENS or None
        self.timeout = config.MPBOT_LLM_TIMEOUT
        self.silence = config.MPBOT_FIRST_TOKEN_TIMEOUT
        self.retries = config.MPBOT_LLM_RETRIES
        self.length_note = config.text("cut_by_length", tap=False)
        self.client = openai.OpenAI(
            # Local endpoints (Ollama, vLLM) take any key; the client insists on one.
            api_key=config.OPENAI_API_KEY or "unset",
            base_url=config.OPENAI_BASE_URL or None,
            timeout=config.MPBOT_LLM_TIMEOUT,
            max_retries=0,  # complete() retries, within the answer's deadline
        )

    def complete(
        self, messages: list[dict], on_text=None, model: str | None = None, deadline: float | None = None
    ) -> str:
        """The answer, streamed: ``on_text`` gets the raw text so far as it grows.

        A 429, a 5xx, a refused connection, a stream that breaks off, or an endpoint that sends
        nothing for ``MPBOT_FIRST_TOKEN_TIMEOUT`` seconds (before its first token, or between two)
        is tried again (a silent one with twice the patience each time), after
        0.5, 1, 2, ... s (or the endpoint's Retry-After), up to ``MPBOT_LLM_RETRIES`` times, as
        long as ``MPBOT_LLM_TIMEOUT`` (the deadline for the whole answer) allows. A call that
        hangs is cut at the deadline, so a job never outlives its RQ job timeout. ``model``: another
        than MPBOT_MODEL; ``deadline``: an earlier one (time.monotonic()) than the timeout gives.
        """
        deadline = min(deadline or float("inf"), time.monotonic() + self.timeout)
        attempt = stalled = 0
        while True:
            try:
                # Each silent attempt doubles the next one's patience: a model that takes long to
                # begin (a long prompt on a local model, a reasoning model) still gets its turn.
                return self._attempt(messages, on_text, deadline, self.silence * 2**stalled, model or self.model)
            except LLMError as exc:
                attempt += 1
                stalled += exc.kind == "stalled"
                if exc.kind not in RETRYABLE or attempt > self.retries:
                    raise
                pause = exc.retry_after if exc.retry_after is not None else 0.5 * 2 ** (attempt - 1)
                pause *= 1 if exc.retry_after is not None else 0.75 + random.random() / 2
                if time.monotonic() + pause >= deadline - 0.5:
                    raise
                log.info("model call failed (%s), trying again in %.1f s (retry %d)", exc.kind, pause, attempt)
                time.sleep(pause)

    def _attempt(self, messages, on_text, deadline: float, silence: float, model: str) -> str:
        raw, finish_reason, refusal = "", None, ""
        remaining = deadline - time.monotonic()
        watchdog = None
        try:
            # The read timeout is the longest silence: before the response, before the first
            # token, or between two tokens.
            timeout = openai.Timeout(remaining, read=min(silence, remaining))
            stream = self.client.chat.completions.create(
                model=model, messages=messages, max_tokens=self.max_tokens, stream=True, timeout=timeout
            )
            # A stream that stalls is closed at the deadline, whatever the read timeout.
            watchdog = threading.Timer(max(deadline - time.monotonic(), 0), stream.close)
            watchdog.daemon = True
            watchdog.start()
            with stream:
                for chunk in stream:
                    if time.monotonic() > deadline:
                        raise LLMError("timeout", f"still streaming after {self.timeout:g} s")
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    finish_reason = choice.finish_reason or finish_reason
                    delta = choice.delta
                    if delta is None:
                        continue
                    refusal += getattr(delta, "refusal", None) or ""
                    # The model's words are untrusted: what XML cannot carry never enters the
                    # answer, so no reply, page, pushed message or session history holds it.
                    content = xml_safe(delta.content or "")
                    if content:
                        raw += content
                        if on_text is not None:
                            on_text(raw)
        except (LLMError, StoreError):  # ours: the deadline, or on_text could not store the text
            raise
        except Exception as exc:  # the API's errors, or the stream broke off after it began
            if time.monotonic() >= deadline - 0.05:
                raise LLMError("timeout", f"no complete answer in {self.timeout:g} s") from exc
            # (A read timeout while the stream runs comes from openai's HTTP client as it is.)
            if isinstance(exc, openai.APITimeoutError) or "Timeout" in type(exc).__name__:
                raise LLMError("stalled", f"nothing from the endpoint for {silence:g} s") from exc
            raise llm_error(exc) from exc
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if finish_reason is None and time.monotonic() >= deadline - 0.05:
            raise LLMError("timeout", f"no complete answer in {self.timeout:g} s")
        if finish_reason == "content_filter" or refusal:
            raise LLMError("refused", refusal or "content_filter")
        text = strip_think(raw)
        if not text:
            raise LLMError("empty", f"finish_reason={finish_reason}")
        if finish_reason == "length":  # cut by the token limit: say so rather than end mid-thought
            text += self.length_note
        return text

    def close(self) -> None:
        self.client.close()
