"""What may be asked and answered: a banned-words list and an optional moderation API hook.

``MPBOT_BANNED_WORDS`` is matched ignoring case, in the question and in the answer (also while it
streams). ``MPBOT_MODERATION_HOOK`` names a function ``(text, kind) -> bool`` to ask as well; a
hook that raises refuses the text (the bot would rather say nothing than something unchecked).
Either way the subscriber reads ``TEXTS["banned"]``.
"""

import importlib
import logging

from .errors import ConfigError

log = logging.getLogger(__name__)


def _load(path: str):
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"MPBOT_MODERATION_HOOK={path!r} cannot be loaded ({exc}): write it as package.module:function"
        ) from None


class Moderator:
    def __init__(self, config) -> None:
        self.words = [word.lower() for word in config.MPBOT_BANNED_WORDS if word.strip()]
        self.hook = _load(config.MPBOT_MODERATION_HOOK) if config.MPBOT_MODERATION_HOOK else None

    def has_banned_word(self, text: str) -> bool:
        lowered = text.lower()
        return any(word in lowered for word in self.words)

    def allowed(self, text: str, kind: str) -> bool:
        if self.has_banned_word(text):
            return False
        if self.hook is None:
            return True
        try:
            return bool(self.hook(text, kind))
        except Exception:
            log.exception("moderation hook failed on a %s: refused it", kind)
            return False
