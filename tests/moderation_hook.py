"""Moderation hooks for the tests, loaded by MPBOT_MODERATION_HOOK as a real one would be."""

seen: list[tuple[str, str]] = []


def allow_unless_secret(text: str, kind: str) -> bool:
    seen.append((kind, text))
    return "机密" not in text


def broken(text: str, kind: str) -> bool:
    raise ConnectionError("the moderation API is down")


def slow(text: str, kind: str) -> bool:
    """A moderation API that takes its time over questions: the first delivery's first step is slow."""
    if kind == "question" and text.startswith("慢审核"):
        import time

        time.sleep(2.9)
    return True
