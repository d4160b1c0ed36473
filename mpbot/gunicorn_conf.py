"""gunicorn settings for the web process (``gunicorn -c python:mpbot.gunicorn_conf wsgi:app``).

Each WeChat delivery may wait ~5 s for its answer, so a worker needs many threads (gthread), not
one request at a time (sync). In embedded mode the state lives in the worker's memory, so there
is exactly one worker; with Redis, ``WEB_CONCURRENCY`` workers share it.
"""

import os
import sys

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
worker_class = "gthread"
threads = _config.MPBOT_WEB_THREADS
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
