"""The OpenAI-compatible client, and the prompt it is sent.

Every failure of the endpoint leaves here as ``LLMError`` with a ``kind`` that the bot has a
sentence for (``TEXTS["error_<kind>"]``, or ``TEXTS["error"]``; see errors.py).
"""

import logging
import time

import openai

from .errors import LLMError, StoreError
from .formatting import strip_think

log = logging.getLogger(__name__)


def build_messages(system: str, history: list[dict[str, str]], question: str, budget: int) -> list[dict[str, str]]:
    """System prompt, then as many of the latest whole turns as fit in ``budget`` characters,
    oldest first, then the question."""
    turns: list[dict[str, str]] = []
    used = 0
    for turn in reversed(history):
        size = len(turn["q"]) + len(turn["a"])
        if used + size > budget:
            break
        used += size
        turns[:0] = [{"role": "user", "content": turn["q"]}, {"role": "assistant", "content": turn["a"]}]
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, *turns, {"role": "user", "content": question}]


def llm_error(exc: Exception) -> LLMError:
    """The ``LLMError`` an exception from the OpenAI client (or its HTTP library) stands for."""
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
        self.length_note = config.text("cut_by_length")
        self.client = openai.OpenAI(
            # Local endpoints (Ollama, vLLM) take any key; the client insists on one.
            api_key=config.OPENAI_API_KEY or "unset",
            base_url=config.OPENAI_BASE_URL or None,
            timeout=config.MPBOT_LLM_TIMEOUT,
            max_retries=1,
        )

    def complete(self, messages: list[dict[str, str]], on_text=None) -> str:
        """The answer, streamed: ``on_text`` gets the raw text so far as it grows. The call as a
        whole is bounded by ``MPBOT_LLM_TIMEOUT``, checked as chunks arrive (a stream that stalls
        ends at the client's read timeout, of the same length)."""
        deadline = time.monotonic() + self.timeout
        raw, finish_reason, refusal = "", None, ""
        try:
            stream = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=self.max_tokens, stream=True
            )
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
                    if delta.content:
                        raw += delta.content
                        if on_text is not None:
                            on_text(raw)
        except (LLMError, StoreError):  # ours: the deadline, or on_text could not store the text
            raise
        except Exception as exc:  # the API's errors, or the stream broke off after it began
            raise llm_error(exc) from exc
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
