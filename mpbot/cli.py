"""``python -m mpbot``: serve the bot (``make run``), run RQ workers (the Procfile's worker line),
and the admin's tools: ``chat`` (play WeChat against a bot), ``check`` (the setup, item by item),
``stats`` (the /metrics figures as a table). Every command reads the same settings:
``settings.py``, the environment, and ``.env`` in the working directory (which ``make run``
writes; the environment wins).

Only ``__main__`` imports this module.
"""

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time

from . import startup
from .config import load_config
from .errors import ConfigError
from .logs import setup_logging

# Settings beside the code, written by `make run`; MPBOT_ENV_FILE names another (/etc/mpbot.env,
# as the systemd units read it), so that the admin's tools see what the services see.
ENV_FILE = os.environ.get("MPBOT_ENV_FILE") or ".env"


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


def _use_env_file() -> None:
    for name, value in _load_env_file(ENV_FILE).items():
        os.environ.setdefault(name, value)


def serve(args) -> int:
    """Run the Procfile's processes: web alone in embedded mode, web and worker with Redis."""
    _use_env_file()
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
    problem = startup.port_problem(startup.bind_address())
    if problem is None and not config.embedded:
        problem = startup.redis_problem(config.REDIS_URL)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    port = os.environ["PORT"]
    print(f"mpbot serving on  http://127.0.0.1:{port}/wechat")
    print(f"  Token (paste into the WeChat admin console): {config.WECHAT_TOKEN}")
    if config.embedded:
        print("  Mode: embedded: one process, in-memory state, model calls in an in-process thread pool")
        print("        (set REDIS_URL for the production shape: state in Redis, model calls on RQ workers)")
    else:
        print(f"  Mode: Redis at {startup.where(config.REDIS_URL)}: stateless web process + RQ workers")
    print(f"  Model: {config.MPBOT_MODEL} at {config.OPENAI_BASE_URL or 'OpenAI'}")
    if not config.OPENAI_API_KEY and not config.OPENAI_BASE_URL:
        print("  warning: OPENAI_API_KEY is not set; OpenAI will refuse every question")
    if config.MPBOT_PUSH:
        print(f"  Push: late answers are sent as customer-service messages of AppID {config.WECHAT_APPID}")
    print(f"  Answer links point to {config.PUBLIC_URL} (PUBLIC_URL)", flush=True)
    unreachable = startup.public_url_problem(config.PUBLIC_URL)
    if unreachable:
        print(f"  warning: {unreachable}", flush=True)

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
    from rq.worker_pool import WorkerPool

    _use_env_file()
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if config.embedded:
        print("error: REDIS_URL is not set: RQ workers need the Redis the web processes use", file=sys.stderr)
        return 2
    problem = startup.redis_problem(config.REDIS_URL)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    # Imported here, before the pool forks its workers, so that no worker pays for the imports
    # (about half a second for openai) on its first job.
    from . import jobs

    # No socket_timeout here: a worker blocks on the queue far longer than any web-side read.
    connection = Redis.from_url(config.REDIS_URL)
    pool = WorkerPool(
        [config.MPBOT_QUEUE],
        connection=connection,
        num_workers=args.num or config.MPBOT_RQ_WORKERS,
        worker_class=jobs.Worker,
        serializer=JSONSerializer,
    )
    pool.start(burst=args.burst, logging_level=os.environ.get("MPBOT_LOG_LEVEL", "INFO").upper())
    return 0


class Progress:
    """A line that counts the seconds of something long, on a terminal only."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.label = ""
        self.started = 0.0
        self._stop = threading.Event()
        self._thread = None

    def start(self, label: str) -> None:
        self.stop()
        if not self.live:
            return
        self.label, self.started = label, time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.stream.write(f"\r{self.label} {time.monotonic() - self.started:4.1f} s ")
            self.stream.flush()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.stream.write("\r\033[K")
            self.stream.flush()


def _settings(overrides=None):
    """The bot's settings for a tool, or None after saying what is wrong."""
    _use_env_file()
    try:
        return load_config(overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _local_url(path: str) -> str:
    return f"http://127.0.0.1:{os.environ.get('PORT', '8000')}{path}"


def chat(args) -> int:
    """Play WeChat against a running bot."""
    from .simulator import Simulator, Unreachable, as_seen

    overrides = {"WECHAT_TOKEN": args.token} if args.token else {}
    if args.aes_key is not None:
        overrides["WECHAT_ENCODING_AES_KEY"] = args.aes_key
    if args.appid is not None:
        overrides["WECHAT_APPID"] = args.appid
    config = _settings(overrides)
    if config is None:
        return 2
    url = args.url or _local_url("/wechat")
    try:
        simulator = Simulator(
            url,
            config.WECHAT_TOKEN,
            config.WECHAT_ENCODING_AES_KEY,
            config.WECHAT_APPID,
            user=args.user,
            timeout=args.wechat_timeout,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = Progress()

    def send(text: str) -> int:
        try:
            result = simulator.send(text, lambda n: progress.start(f"  delivery {n}/{simulator.deliveries} …"))
        except Unreachable as exc:
            progress.stop()
            print(f"error: {exc}: is the bot running? (`make run`)", file=sys.stderr)
            return 2
        progress.stop()
        for delivery in result.deliveries:
            what = {
                "silent": f"silent for {delivery.seconds:.1f} s: WeChat drops it and delivers again",
                "answered": f"answered in {delivery.seconds:.2f} s",
                "no_reply": f"empty reply in {delivery.seconds:.2f} s: WeChat shows nothing",
                "error": f"{delivery.detail}: WeChat shows its error",
            }[delivery.outcome]
            print(f"  delivery {delivery.number}/{simulator.deliveries}: {what}")
        if result.wechat_error:
            print(f"bot ({result.seconds:.1f} s, WeChat's error)> {result.reply}")
            return 1
        if result.reply is None:
            print(f"bot ({result.seconds:.1f} s)> (nothing)")
            return 1
        print(f"bot ({result.seconds:.1f} s)> {as_seen(result.reply)}")
        return 0

    if args.send is not None:
        return send(args.send)
    mode = "safe mode" if config.WECHAT_ENCODING_AES_KEY else "plaintext"
    print(f"Playing WeChat against {url} as subscriber {args.user!r} ({mode}). Type a message; Ctrl-D quits.")
    typed = sys.stdin.isatty()
    while True:
        try:
            text = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not typed:  # piped in: show the message, as a terminal would have
            print(text)
        if text.strip():
            send(text)


def check(args) -> int:
    """Check the setup, one line per item."""
    from .doctor import FAIL, run_checks

    from_environment = bool(os.environ.get("SECRET_KEY") or _load_env_file(ENV_FILE).get("SECRET_KEY"))
    _use_env_file()
    token_missing = False
    try:
        config = load_config()
    except ConfigError as exc:
        if not str(exc).startswith("WECHAT_TOKEN is not set"):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        # A bare clone: say what is missing, item by item, rather than stop at the first.
        token_missing, config = True, load_config({"WECHAT_TOKEN": "unset"})
    marks = {"ok": "✔", "warn": "!", "fail": "✘", "info": "·"} if sys.stdout.isatty() else None
    progress = Progress()
    failed = False
    progress.start("checking …")
    for status, item, detail in run_checks(config, from_environment, token_missing):
        progress.stop()
        mark = marks[status] if marks else status.upper().ljust(4)
        print(f"{mark} {item:<10} {detail}", flush=True)
        failed = failed or status == FAIL
        progress.start("checking …")
    progress.stop()
    return 1 if failed else 0


def import_rules(args) -> int:
    """Carry the console's keyword replies, reply to any message and reply on following over to
    a rules file the bot loads (developer mode switched them off in the console)."""
    import json
    import tempfile

    import settings

    from .autoreply import from_console, rules_path
    from .errors import StoreError
    from .keys import Keys
    from .metrics import Metrics
    from .push import PushError, WeChatAPI
    from .store import make_store

    config = _settings()
    if config is None:
        return 2
    missing = [name for name in ("WECHAT_APPID", "WECHAT_APPSECRET") if not getattr(config, name)]
    if missing:
        print(
            f"error: {' and '.join(missing)} not set: reading the console's rules takes the account's AppID and "
            "AppSecret (设置与开发 > 基本配置), and this server's IP in the IP whitelist",
            file=sys.stderr,
        )
        return 2
    path = os.path.abspath(args.output or rules_path(config.MPBOT_RULES_FILE or "rules.json", settings.__file__))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        print(f"error: {folder} is not a folder: say where to write the rules with --output", file=sys.stderr)
        return 2
    try:
        store = make_store(config)
        keys = Keys(config.MPBOT_KEY_PREFIX)
        api = WeChatAPI(config, store, keys, Metrics(config, store, keys))
        try:
            info = api.autoreply_info()
        finally:
            api.close()
            store.close()
    except PushError as exc:
        print(f"error: cannot read the console's rules from {config.WECHAT_API_BASE}: {exc.detail}", file=sys.stderr)
        return 1
    except StoreError as exc:  # the access_token is shared through Redis with the running bot
        print(
            f"error: {exc}: the access_token is shared through REDIS_URL; start Redis or fix REDIS_URL", file=sys.stderr
        )
        return 1
    document, skipped = from_console(info)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=folder, suffix=".tmp", delete=False) as f:
        json.dump(document, f, ensure_ascii=False, indent=2)
        f.write("\n")
    try:
        load_config({"MPBOT_RULES_FILE": f.name})  # the bot must be able to start with it
    except ConfigError as exc:
        os.unlink(f.name)
        print(f"error: the console's rules, as they are, would stop the bot from starting: {exc}", file=sys.stderr)
        return 1
    os.replace(f.name, path)
    commands = {alias.strip().lower() for aliases in config.COMMANDS.values() for alias in aliases}
    shadowed = sorted({k for rule in document["rules"] for k in rule["keywords"] if k.strip().lower() in commands})
    print(f"wrote {path}:")
    print(f"  {len(document['rules'])} keyword rule(s)")
    print(f"  reply on following (before the welcome text): {'yes' if 'follow_reply' in document else 'no'}")
    print(f"  reply to any message (before the hint, outside a chat): {'yes' if 'default_reply' in document else 'no'}")
    for line in skipped:
        print(f"  not carried: {line}")
    if shadowed:
        print(f"  note: {', '.join(shadowed)} are also commands, and commands come first")
    if not config.MPBOT_RULES_FILE or rules_path(config.MPBOT_RULES_FILE, settings.__file__) != os.path.abspath(path):
        print(f"set MPBOT_RULES_FILE={path} for the bot to load it", file=sys.stderr)
    print("restart the bot (and its workers) to use the rules")
    return 0


def stats(args) -> int:
    """The /metrics figures as a table."""
    from . import stats as figures

    config = _settings()
    if config is None:
        return 2
    try:
        if config.embedded or args.url:
            url = args.url or _local_url("/metrics")
            samples, rq = figures.samples_from_url(url, config.MPBOT_METRICS_TOKEN), None
        else:
            samples, rq = figures.samples_from_store(config)
    except Exception as exc:
        where = "the bot's /metrics" if config.embedded or args.url else "Redis"
        print(f"error: cannot read the figures from {where}: {exc}", file=sys.stderr)
        return 2
    print(figures.render(figures.table(samples, rq)))
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

    talk = commands.add_parser(
        "chat",
        help="play WeChat against a running bot",
        description="Play WeChat against a running bot: each message is signed (and encrypted in safe mode) and "
        "delivered as WeChat does, up to three times with the same MsgId, each dropped after 5 s. "
        "Exit code with --send: 0 answered, 1 WeChat shows nothing or its error, 2 bot unreachable or bad settings.",
    )
    talk.add_argument("--url", help="the bot's webhook (default: the local bot, http://127.0.0.1:$PORT/wechat)")
    talk.add_argument("--token", help="WeChat Token (default: WECHAT_TOKEN from the settings)")
    talk.add_argument("--aes-key", help="EncodingAESKey: send in safe mode (default: the settings')")
    talk.add_argument("--appid", help="AppID for safe mode (default: WECHAT_APPID)")
    talk.add_argument("--user", default="mpbot-chat", help="the subscriber's openid (default: mpbot-chat)")
    talk.add_argument("--send", metavar="TEXT", help="send one message, print what happens, and exit")
    talk.add_argument(
        "--wechat-timeout", type=float, default=5.0, help="seconds WeChat waits for each delivery (default 5)"
    )
    talk.set_defaults(func=chat)

    doctor = commands.add_parser(
        "check",
        help="check the setup, one line per item, with the fix",
        description="Check the settings, Redis, the RQ workers, the model endpoint (a one-token request) and "
        "PUBLIC_URL. Exit code 0 when nothing failed, 1 otherwise.",
    )
    doctor.set_defaults(func=check)

    rules = commands.add_parser(
        "import-rules",
        help="carry the console's keyword replies over to the bot (developer mode turns them off)",
        description="Read the console's auto-replies (关键词回复, 收到消息回复, 被关注回复) with "
        "get_current_autoreply_info (WECHAT_APPID, WECHAT_APPSECRET, and this server's IP in the whitelist) and "
        "write them as a rules file (MPBOT_RULES_FILE) that the bot loads at start. Only text replies can be "
        "carried: image, article, voice and video replies are listed as not carried. Exit code 0 when written.",
    )
    rules.add_argument("--output", help="the file to write (default: MPBOT_RULES_FILE, rules.json beside settings.py)")
    rules.set_defaults(func=import_rules)

    figures = commands.add_parser(
        "stats",
        help="the /metrics figures as a table",
        description="Deliveries by outcome, model calls and errors, answers in flight, sessions and pages. "
        "With Redis they are read from the store; in embedded mode from the running bot's /metrics.",
    )
    figures.add_argument("--url", help="read this /metrics instead (default: the store, or the local bot)")
    figures.set_defaults(func=stats)
    args = parser.parse_args(argv)
    sys.exit(args.func(args))
