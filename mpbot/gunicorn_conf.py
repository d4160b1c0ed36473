"""gunicorn settings for the web process (``gunicorn -c python:mpbot.gunicorn_conf wsgi:app``).

Each WeChat delivery may wait ~5 s for its answer, so a worker holds many requests at once: with
gevent each connection is a greenlet, so thousands of waiting deliveries, idle keep-alives or
clients that send a byte and stall (which held a gthread thread each, with no deadline on the
headers) cost a few KB apiece. In embedded mode the state lives in the worker's memory, so there
is exactly one worker; with Redis, ``WEB_CONCURRENCY`` workers share it.
"""

import os
import resource
import sys
import warnings

from mpbot import startup
from mpbot.config import load_config

_config = load_config()

bind = startup.bind_address()
# A port in use or a Redis that does not answer: one line that names the fix and an exit, not
# gunicorn's retries or a web process that fails every request. (gunicorn imports this module
# once; a reload does not run it again.)
_problem = startup.port_problem(bind) or (None if _config.embedded else startup.redis_problem(_config.REDIS_URL))
if _problem:
    print(f"error: {_problem}", file=sys.stderr, flush=True)
    raise SystemExit(1)
worker_class = "gevent"
# The check above imports redis here, in the master, and redis-py's asyncio client (which the bot
# never uses) takes names from ssl directly: each worker's gevent patching then warns at every
# start, and an admin reads it as a fault. Only that warning is silenced; one that names any
# other module, or a subclass of ssl's classes, still shows.
warnings.filterwarnings(
    "ignore",
    message=r"Monkey-patching ssl after ssl has already been imported.*"
    r"\(NOT patched\): \['redis\.asyncio\.connection \([^)]*\)'\]\. \Z",
)
worker_connections = _config.MPBOT_WEB_CONNECTIONS
# Each connection is a file descriptor: let a worker hold them all (and its Redis connections),
# where the system allows it, rather than stop accepting at the usual soft limit of 1024.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
_wanted = worker_connections + _config.MPBOT_REDIS_MAX_CONNECTIONS + 256
if _soft != resource.RLIM_INFINITY and _soft < _wanted:
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (_wanted if _hard == resource.RLIM_INFINITY else min(_wanted, _hard), _hard)
    )
workers = 1 if _config.embedded else int(os.environ.get("WEB_CONCURRENCY", "2"))
# A request may legitimately take ~6 s; a worker silent for 30 s is stuck.
timeout = 30
# On SIGTERM, let waiting deliveries finish (they end within WeChat's 5 s).
graceful_timeout = 10
keepalive = 5
# gunicorn 27 opens a control socket under $HOME/.gunicorn by default; several instances on one
# host (tests, CI, web beside worker) would fight over it.
control_socket_disable = True
# Whose X-Forwarded-* headers gunicorn believes: the same proxies as the app's (settings.py).
forwarded_allow_ips = ",".join(_config.MPBOT_FORWARDED_ALLOW_IPS)
errorlog = "-"
loglevel = os.environ.get("MPBOT_LOG_LEVEL", "info").lower()
