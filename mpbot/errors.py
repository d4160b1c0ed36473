"""The project's exceptions.

    MpbotError
    ├── ConfigError        a setting is missing or malformed; the message says which and how to fix it
    ├── StoreError         Redis could not be reached or answered badly (the in-memory store never raises it)
    ├── LLMError           the model call failed; ``kind`` says how (see below)
    └── BadRequest         a request WeChat sent (or someone forged) that we refuse with a 4xx
        ├── Forbidden      a signature that does not hold, a stale or replayed one, plaintext in safe mode (403)
        └── TooLarge       a body over the limit (413)

A ``BadRequest`` carries a ``reason`` (a short word) that /metrics counts refusals by.

``LLMError.kind`` is one of ``timeout``, ``rate_limited``, ``unavailable``, ``unreachable``,
``refused``, ``empty``, ``auth``, ``bad_request``, or ``banned`` (moderation refused the answer).
An answer can also end with the kinds ``cancelled`` (/stop), ``store`` or ``internal``. The
subscriber reads ``TEXTS["error_<kind>"]`` where settings.py has one (timeout, rate_limited,
refused, empty, cancelled, banned) and ``TEXTS["error"]`` otherwise.
"""


class MpbotError(Exception):
    """Base class of every error mpbot raises on purpose."""


class ConfigError(MpbotError):
    pass


class StoreError(MpbotError):
    pass


class LLMError(MpbotError):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        self.retry_after: float | None = None  # seconds the endpoint asked to wait, if it did


class BadRequest(MpbotError):
    status = 400
    reason = "malformed"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class Forbidden(BadRequest):
    status = 403
    reason = "signature"


class TooLarge(BadRequest):
    status = 413
    reason = "too_large"
