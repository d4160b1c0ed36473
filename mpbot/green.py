"""Whether this process runs under gevent (gunicorn's gevent worker patches it at its start), a
deadline that only gevent can put on a blocking call, and real threads for work that would hold
the event loop."""

import contextlib
import sys
import threading

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


# Each kind of work has its own small pool of real threads: gevent's shared one also resolves
# host names, which must not wait behind a render or a picture. Two each: every such thread takes
# the interpreter's lock from the event loop that answers WeChat while it runs Python code.
OFF_LOOP_THREADS = 2
_pools: dict = {}
_pools_lock = threading.Lock()


def off_the_loop(pool: str, work, *args):
    """``work(*args)``, in a real thread of the pool named ``pool`` when this process runs gevent
    (gunicorn's worker), so that slow work (a page markdown-it takes seconds over, a picture to
    scale down, audio to decode) holds up its own kind, not every request of the process;
    directly otherwise."""
    if not patched():
        return work(*args)
    with _pools_lock:
        if pool not in _pools:  # made in the worker process, after gunicorn forked it
            from gevent.threadpool import ThreadPool

            _pools[pool] = ThreadPool(OFF_LOOP_THREADS)
    return _pools[pool].apply(work, args)
