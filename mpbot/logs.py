"""Log setup for the processes mpbot starts (web, worker, CLI)."""

import hashlib
import logging
import os


def user_tag(openid: str) -> str:
    """The openid as it appears in logs: hashed, so a log line cannot be tied to a subscriber
    without the openid itself."""
    return hashlib.sha256(openid.encode()).hexdigest()[:12]


def setup_logging() -> None:
    """One line per record on stderr, level from ``MPBOT_LOG_LEVEL`` (default INFO); leaves an
    existing setup (pytest, a host application) alone."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(
        level=os.environ.get("MPBOT_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    # The openai client logs every request at INFO through httpx; keep the admin's log about the bot.
    # urllib3 logs request URLs at DEBUG, and WeChat's API takes its access_token in the URL.
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "openai", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
