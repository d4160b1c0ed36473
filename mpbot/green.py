"""Whether this process runs under gevent (gunicorn's gevent worker patches it at its start), and
a deadline that only gevent can put on a blocking call."""

import contextlib
import sys

from .errors import StoreError


def patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


@contextlib.contextmanager
def store_deadline(seconds: float, what: str):
    """Under gevent, a Redis call in this block that has not answered within ``seconds`` is cut
    (redis-py drops the connection it was on) and raises StoreError; elsewhere the block runs as
    it is, bounded by the socket timeout alone."""
    if not patched():
        yield
        return
    import gevent

    timer = gevent.Timeout(max(seconds, 0.001))
    timer.start()
    try:
        yield
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise StoreError(f"Redis did not answer {what} within {seconds:.1f} s") from None
    finally:
        timer.close()
