"""``python -m mpbot``: serve the bot (``make run``) or run RQ workers (the Procfile's worker line).

Nothing imports this module.
"""

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

from .config import load_config
from .errors import ConfigError
from .logs import setup_logging

ENV_FILE = ".env"


def _load_env_file(path: str) -> dict[str, str]:
    values = {}
    if os.path.exists(path):
        for line in open(path, encoding="utf-8"):
            match = re.match(r"\s*(?:export\s+)?([A-Z_][A-Z0-9_]*)\s*=\s*(.*?)\s*$", line)
            if match and not line.lstrip().startswith("#"):
                values[match.group(1)] = match.group(2).strip("'\"")
    return values


def _procfile(path: str = "Procfile") -> dict[str, str]:
    lines = {}
    for line in open(path, encoding="utf-8"):
        name, sep, command = line.partition(":")
        if sep and not name.lstrip().startswith("#"):
            lines[name.strip()] = command.strip()
    return lines


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path}"


def serve(args) -> int:
    """Run the Procfile's processes: web alone in embedded mode, web and worker with Redis."""
    for name, value in _load_env_file(ENV_FILE).items():
        os.environ.setdefault(name, value)
    if not os.environ.get("WECHAT_TOKEN"):
        token = secrets.token_hex(16)
        with open(ENV_FILE, "a", encoding="utf-8") as env_file:
            os.fchmod(env_file.fileno(), 0o600)
            env_file.write(f"WECHAT_TOKEN={token}\n")
        os.environ["WECHAT_TOKEN"] = token
        print(f"No WECHAT_TOKEN was set: generated one and saved it in {ENV_FILE}.")
    os.environ.setdefault("PORT", str(args.port))
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    port = os.environ["PORT"]
    print(f"mpbot serving on  http://127.0.0.1:{port}/wechat")
    print(f"  Token (paste into the WeChat admin console): {config.WECHAT_TOKEN}")
    if config.embedded:
        print("  Mode: embedded: one process, in-memory state, model calls in an in-process thread pool")
        print("        (set REDIS_URL for the production shape: state in Redis, model calls on RQ workers)")
    else:
        print(f"  Mode: Redis at {_redact(config.REDIS_URL)}: stateless web process + RQ workers")
    print(f"  Model: {config.MPBOT_MODEL} at {config.OPENAI_BASE_URL or 'OpenAI'}")
    if not config.OPENAI_API_KEY and not config.OPENAI_BASE_URL:
        print("  warning: OPENAI_API_KEY is not set; OpenAI will refuse every question")
    print(f"  Answer links point to {config.PUBLIC_URL} (PUBLIC_URL)", flush=True)

    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    wanted = ["web"] if config.embedded else ["web", "worker"]
    lines = _procfile()
    # Each line in its own process group, so that a signal reaches gunicorn's or RQ's workers too.
    children = [
        subprocess.Popen(["sh", "-c", f"exec {lines[name]}"], env=env, start_new_session=True) for name in wanted
    ]

    def stop(signum, _frame):
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    stop(signal.SIGTERM, None)
    codes = [child.wait() for child in children]
    return max(abs(code) for code in codes)


def worker(args) -> int:
    """RQ workers for the model calls: a pool of in-process (non-forking) workers, so each keeps
    its HTTP client and imports between jobs."""
    setup_logging()
    from redis import Redis
    from rq.serializers import JSONSerializer
    from rq.worker import SimpleWorker
    from rq.worker_pool import WorkerPool

    try:
        config = load_config()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if config.embedded:
        print("error: REDIS_URL is not set: RQ workers need the Redis the web processes use", file=sys.stderr)
        return 2
    # Imported here, before the pool forks its workers, so that no worker pays for the imports
    # (about half a second for openai) on its first job.
    from . import jobs  # noqa: F401

    # No socket_timeout here: a worker blocks on the queue far longer than any web-side read.
    connection = Redis.from_url(config.REDIS_URL)
    pool = WorkerPool(
        [config.MPBOT_QUEUE],
        connection=connection,
        num_workers=args.num or config.MPBOT_RQ_WORKERS,
        worker_class=SimpleWorker,
        serializer=JSONSerializer,
    )
    pool.start(burst=args.burst, logging_level=os.environ.get("MPBOT_LOG_LEVEL", "INFO").upper())
    return 0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mpbot", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the bot (what `make run` does)")
    run.add_argument("--port", type=int, default=8000, help="port when $PORT is not set (default 8000)")
    run.set_defaults(func=serve)
    work = commands.add_parser("worker", help="run RQ workers for the model calls (needs REDIS_URL)")
    work.add_argument("--num", type=int, default=0, help="worker processes (default MPBOT_RQ_WORKERS)")
    work.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    work.set_defaults(func=worker)
    args = parser.parse_args(argv)
    sys.exit(args.func(args))
