"""The OpenAI-compatible client, and the prompt it is sent.

Every failure of the endpoint leaves here as ``LLMError`` with a ``kind`` that the bot has a
sentence for (``TEXTS["error_<kind>"]``, or ``TEXTS["error"]``; see errors.py).
"""

import logging

import openai

from .errors import LLMError
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


class LLM:
    def __init__(self, config) -> None:
        self.model = config.MPBOT_MODEL
        self.max_tokens = config.MPBOT_MAX_TOKENS or None
        self.client = openai.OpenAI(
            # Local endpoints (Ollama, vLLM) take any key; the client insists on one.
            api_key=config.OPENAI_API_KEY or "unset",
            base_url=config.OPENAI_BASE_URL or None,
            timeout=config.MPBOT_LLM_TIMEOUT,
            max_retries=1,
        )

    def complete(self, messages: list[dict[str, str]]) -> str:
        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=self.max_tokens
            )
        except openai.APITimeoutError as exc:
            raise LLMError("timeout", str(exc)) from exc
        except openai.APIConnectionError as exc:
            raise LLMError("unreachable", str(exc)) from exc
        except openai.RateLimitError as exc:
            raise LLMError("rate_limited", str(exc)) from exc
        except openai.AuthenticationError as exc:
            raise LLMError("auth", "the endpoint refused OPENAI_API_KEY") from exc
        except openai.APIStatusError as exc:
            kind = "unavailable" if exc.status_code >= 500 else "bad_request"
            raise LLMError(kind, f"HTTP {exc.status_code}: {exc.message}") from exc
        except openai.OpenAIError as exc:
            raise LLMError("unavailable", f"{exc.__class__.__name__}: {exc}") from exc
        if not response.choices:
            raise LLMError("empty", "no choices in the response")
        choice = response.choices[0]
        if choice.finish_reason == "content_filter" or getattr(choice.message, "refusal", None):
            raise LLMError("refused", choice.message.refusal or "content_filter")
        text = strip_think(choice.message.content or "")
        if not text:
            raise LLMError("empty", f"finish_reason={choice.finish_reason}")
        return text

    def close(self) -> None:
        self.client.close()
