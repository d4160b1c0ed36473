"""``python -m mpbot check``: is this bot set up right? One line per item, with the fix.

Each check returns ``(status, item, detail)``: status ``ok``, ``warn``, ``fail`` or ``info``.
The checks talk to the real things (Redis, the RQ workers' registrations, the model endpoint with
a one-token request, ``PUBLIC_URL``'s ``/healthz``), each with a short timeout.
"""

import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import openai

from .config import aes_key
from .errors import ConfigError
from .llm import llm_error
from .simulator import http_only
from .wechat import PLAINTEXT_REFUSED

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"

_FIXES = {
    "auth": "the endpoint refused OPENAI_API_KEY: set the key it issued",
    "unreachable": "nothing answers at OPENAI_BASE_URL: check the address and that the server runs",
    "timeout": "the endpoint did not answer in time: check OPENAI_BASE_URL and the server's load",
    "rate_limited": "the endpoint says too many requests (429): check the account's quota",
    "bad_request": "the endpoint refused the request: check MPBOT_MODEL (the endpoint's own model name)",
}


def check_token(config, missing: bool = False):
    if missing:
        return (
            FAIL,
            "token",
            "WECHAT_TOKEN is not set: `make run` generates one into .env, or set your own (3-32 letters or "
            "digits); the console's Token (服务器配置 > 令牌) must be the same",
        )
    token = config.WECHAT_TOKEN
    if not re.fullmatch(r"[A-Za-z0-9]{3,32}", token):
        return FAIL, "token", "WECHAT_TOKEN must be 3-32 letters or digits, as the WeChat admin console accepts"
    return OK, "token", f"WECHAT_TOKEN is set ({len(token)} characters)"


def check_aes(config, store=None):
    """The key's shape and, where state is shared (Redis), whether a signed plaintext message was
    refused in the last hour: the console is then in plaintext mode while the bot expects
    encryption."""
    if not config.WECHAT_ENCODING_AES_KEY:
        return INFO, "safe mode", "no WECHAT_ENCODING_AES_KEY: plaintext mode only (set it for safe/compatible mode)"
    try:
        aes_key(config.WECHAT_ENCODING_AES_KEY)
    except ConfigError as exc:
        return FAIL, "safe mode", str(exc)
    last = None
    if store is not None:
        from .keys import Keys

        try:
            last = store.get(Keys(config.MPBOT_KEY_PREFIX).plaintext_refused())
        except Exception:  # noqa: S110 (Redis has a line of its own next)
            pass
    if last:
        at = time.strftime("%H:%M:%S", time.localtime(float(last)))
        return FAIL, "safe mode", f"a signed message was refused at {at}: {PLAINTEXT_REFUSED}"
    return (
        OK,
        "safe mode",
        f"EncodingAESKey well-formed, AppID {config.WECHAT_APPID}; plaintext messages are refused, so the console's "
        "消息加解密方式 must be 安全模式 or 兼容模式",
    )


def check_secret(config, from_environment: bool):
    if from_environment:
        return OK, "link key", "SECRET_KEY is set"
    return WARN, "link key", "SECRET_KEY is not set: links sent before a restart stop working after it; set SECRET_KEY"


def check_redis(config, store):
    if store is None:
        return INFO, "redis", "embedded mode (no REDIS_URL): one process, state in memory"
    from .keys import Keys

    try:
        detail = store.ping()
        store.set(Keys(config.MPBOT_KEY_PREFIX).health(), "1", 60)  # it takes writes, too
        version = store.redis.info("server").get("redis_version", "0")
    except Exception as exc:
        return FAIL, "redis", f"{exc}: start Redis or fix REDIS_URL"
    if tuple(int(part) for part in re.findall(r"\d+", version)[:2]) < (7, 0):
        return FAIL, "redis", f"Redis {version} is too old: mpbot needs Redis 7.0 or newer (for EXPIRE ... NX)"
    return OK, "redis", f"reachable and takes writes, {detail}"


def check_workers(config, store):
    if store is None:
        return INFO, "workers", "embedded mode: model calls run in the web process's own pool"
    from rq import Queue, Worker

    try:
        workers = Worker.all(queue=Queue(config.MPBOT_QUEUE, connection=store.rq_redis))
    except Exception as exc:
        return FAIL, "workers", f"cannot list RQ workers: {exc}"
    if not workers:
        return (
            FAIL,
            "workers",
            (
                f"no RQ worker listens on queue {config.MPBOT_QUEUE!r}: start `python -m mpbot worker` "
                "(the Procfile's worker line) with the same REDIS_URL"
            ),
        )
    hosts = sorted({worker.hostname or "?" for worker in workers})
    return OK, "workers", f"{len(workers)} RQ workers on queue {config.MPBOT_QUEUE!r} ({', '.join(hosts)})"


def _without_credentials(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=f"***@{parts.hostname}" + (f":{parts.port}" if parts.port else ""))
    return urllib.parse.urlunsplit(parts)


def check_llm(config, timeout: float = 20.0):
    if not config.OPENAI_API_KEY and not config.OPENAI_BASE_URL:
        return (
            FAIL,
            "model",
            "no model is set: set OPENAI_API_KEY (and OPENAI_BASE_URL and MPBOT_MODEL for another "
            "OpenAI-compatible endpoint: DeepSeek, Qwen, a local Ollama or vLLM)",
        )
    where = _without_credentials(config.OPENAI_BASE_URL) if config.OPENAI_BASE_URL else "OpenAI"
    client = openai.OpenAI(
        api_key=config.OPENAI_API_KEY or "unset",
        base_url=config.OPENAI_BASE_URL or None,
        timeout=timeout,
        max_retries=0,
    )
    started = time.monotonic()
    try:
        client.chat.completions.create(
            model=config.MPBOT_MODEL, messages=[{"role": "user", "content": "ping"}], max_tokens=1
        )
    except Exception as exc:
        error = llm_error(exc)
        fix = _FIXES.get(error.kind, "the endpoint failed")
        detail = (error.detail or error.kind).replace(config.OPENAI_API_KEY or "\0", "***")
        return FAIL, "model", f"{config.MPBOT_MODEL} at {where}: {detail}; {fix}"
    finally:
        client.close()
    return OK, "model", f"{config.MPBOT_MODEL} at {where} answered a one-token request in {_ms(started)} ms"


def _test_picture() -> str:
    """A small picture, as a data: URL: red on the left, blue on the right."""
    import base64
    import io

    from PIL import Image

    image = Image.new("RGB", (64, 64), "red")
    image.paste(Image.new("RGB", (32, 64), "blue"), (32, 0))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)  # as the bot sends pictures
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def check_pictures(config, model_ok: bool, timeout: float = 20.0):
    """Whether the model for pictures takes one: a 64 x 64 picture and a one-word question."""
    if not config.MPBOT_PICTURES:
        return INFO, "pictures", "off (MPBOT_PICTURES): pictures get TEXTS['unsupported']"
    if not model_ok:
        return INFO, "pictures", "not checked: the model did not answer"
    model = config.MPBOT_VISION_MODEL or config.MPBOT_MODEL
    where = _without_credentials(config.OPENAI_BASE_URL) if config.OPENAI_BASE_URL else "OpenAI"
    key = config.OPENAI_API_KEY or "unset"
    client = openai.OpenAI(api_key=key, base_url=config.OPENAI_BASE_URL or None, timeout=timeout, max_retries=0)
    question = [
        {"type": "text", "text": "What colour is the left half of this picture? One word."},
        {"type": "image_url", "image_url": {"url": _test_picture()}},
    ]
    started = time.monotonic()
    try:
        response = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], max_tokens=5
        )
    except Exception as exc:
        error = llm_error(exc)
        detail = (error.detail or error.kind).replace(config.OPENAI_API_KEY or "\0", "***")
        if error.kind == "bad_request":
            return (
                WARN,
                "pictures",
                f"{model} at {where} refused a test picture ({detail}): subscribers' pictures get "
                "TEXTS['error_no_vision']; set MPBOT_VISION_MODEL to a model that takes pictures (gpt-4o-mini, "
                "qwen-vl-max, glm-4v, llava on Ollama), or MPBOT_PICTURES=0",
            )
        return WARN, "pictures", f"{model} at {where} failed a test picture: {detail}"
    finally:
        client.close()
    said = " ".join(((response.choices[0].message.content or "") if response.choices else "").split())[:40]
    return (
        OK,
        "pictures",
        f"{model} at {where} took a test picture in {_ms(started)} ms (asked its colour, it said {said!r})",
    )


def _test_clip() -> bytes:
    """One second of a 440 Hz tone, as 16 kHz mono WAV."""
    import io
    import math
    import struct
    import wave

    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / 16000))) for n in range(16000))
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(frames)
    return out.getvalue()


def check_voice(config, timeout: float = 20.0):
    """How voice messages are heard: WeChat's Recognition, and our own transcription when the
    AppSecret and a transcription model are set (tried with a one-second clip)."""
    if not (config.WECHAT_APPID and config.WECHAT_APPSECRET):
        return (
            INFO,
            "voice",
            "heard only where WeChat sends its own Recognition (speech recognition on in the console, which WeChat "
            "is retiring); other voice messages are asked to type: set WECHAT_APPID and WECHAT_APPSECRET (and this "
            "server's IP in the console's IP whitelist) to fetch and transcribe them",
        )
    if not config.MPBOT_STT_MODEL:
        return INFO, "voice", "transcription off (MPBOT_STT_MODEL is empty): voice without Recognition is asked to type"
    base = config.MPBOT_STT_BASE_URL or config.OPENAI_BASE_URL
    key = config.MPBOT_STT_API_KEY or config.OPENAI_API_KEY
    where = _without_credentials(base) if base else "OpenAI"
    client = openai.OpenAI(api_key=key or "unset", base_url=base or None, timeout=timeout, max_retries=0)
    started = time.monotonic()
    try:
        client.audio.transcriptions.create(model=config.MPBOT_STT_MODEL, file=("check.wav", _test_clip(), "audio/wav"))
    except Exception as exc:
        error = llm_error(exc)
        detail = (error.detail or error.kind).replace(key or "\0", "***")
        return (
            WARN,
            "voice",
            f"{config.MPBOT_STT_MODEL} at {where} failed a one-second test clip ({detail}): voice without "
            "Recognition gets TEXTS['error_voice_failed']; check MPBOT_STT_BASE_URL and MPBOT_STT_MODEL "
            "(an endpoint with POST /audio/transcriptions)",
        )
    finally:
        client.close()
    return (
        OK,
        "voice",
        f"{config.MPBOT_STT_MODEL} at {where} transcribed a one-second test clip in {_ms(started)} ms; voice without "
        "WeChat's Recognition is fetched with the AppSecret and transcribed",
    )


def check_public_url(config, timeout: float = 5.0):
    from .startup import on_the_internet, public_url_problem

    unreachable = public_url_problem(config.PUBLIC_URL)
    if not on_the_internet(config.PUBLIC_URL):  # no use asking it: a phone could not
        return WARN, "public url", unreachable
    url = f"{config.PUBLIC_URL}/healthz"
    started = time.monotonic()
    try:
        with urllib.request.urlopen(http_only(url), timeout=timeout) as response:  # noqa: S310 (http_only checked it)
            body = response.read(200).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return FAIL, "public url", f"{url} answered HTTP {exc.code}: links in replies lead to an error there"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return (
            FAIL,
            "public url",
            (f"{url} does not answer ({reason}): set PUBLIC_URL to the address subscribers' phones reach this bot at"),
        )
    if not body.startswith("ok"):
        return WARN, "public url", f"{url} answered, but not as mpbot does ({body[:40]!r})"
    if unreachable:
        return WARN, "public url", f"answers here ({_ms(started)} ms), but {unreachable}"
    return OK, "public url", f"{config.PUBLIC_URL} answers ({_ms(started)} ms)"


def check_running(timeout: float = 3.0):
    """Whether the bot answers on this host (``PORT``), where ``make run`` starts it."""
    port = os.environ.get("PORT", "8000")
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a fixed http URL)
            body = response.read(200).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return FAIL, "running", f"the bot on port {port} answers /healthz with {exc.code}: see its log"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return FAIL, "running", f"nothing answers on port {port} here ({reason}): start the bot (`make run`)"
    return OK, "running", f"the bot answers on port {port} ({body.strip()})"


def check_console(config):
    """What to type in the admin console, last: the settings above are what it must match."""
    mode = "安全模式 (or 兼容模式)" if config.WECHAT_ENCODING_AES_KEY else "明文模式"
    return (
        INFO,
        "console",
        f"设置与开发 > 基本配置 > 服务器配置: URL {config.PUBLIC_URL}/wechat, Token = WECHAT_TOKEN, "
        f"消息加解密方式 {mode}; submit, then 启用 (enable)",
    )


def check_push(config, store):
    """Push on: can this server get the account's access_token? With Redis it takes the bots'
    shared token, so it costs no fetch when they have one; in embedded mode it fetches its own,
    which getStableAccessToken allows without invalidating the bot's."""
    if not config.MPBOT_PUSH:
        return INFO, "push", "off (MPBOT_PUSH): late answers wait behind the page link and the next message"
    from .keys import Keys
    from .metrics import Metrics
    from .push import PushError, WeChatAPI, beijing_day

    keys = Keys(config.MPBOT_KEY_PREFIX)
    api = WeChatAPI(config, store, keys, Metrics(config, store, keys))
    started = time.monotonic()
    try:
        api.token()
    except PushError as exc:
        return FAIL, "push", f"cannot get an access_token from {config.WECHAT_API_BASE}: {exc.detail}"
    except Exception as exc:
        return FAIL, "push", f"cannot get an access_token: {exc.__class__.__name__}: {exc}"
    finally:
        api.close()
    fetches = store.get(keys.wx_fetches(beijing_day())) or 0
    paused = store.get(keys.push_off())
    shared = "" if config.embedded else f"; {fetches} of {config.WECHAT_TOKEN_DAILY_LIMIT} fetches today"
    detail = (
        f"access_token OK ({_ms(started)} ms{shared}); whether the account may send customer-service "
        "messages shows at the first push (48001 if it is not verified)"
    )
    if paused:
        return WARN, "push", f"paused after a failure ({paused}); {detail}"
    return OK, "push", detail


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def run_checks(config, from_environment: bool, token_missing: bool = False):
    """Every check, as a generator (so a caller can show each as it finishes), in the order a new
    admin meets them on the way to the first real message: the Token, the store and workers, the
    model, the bot running here, the address phones reach, then what the console must match."""
    from .store import MemoryStore, RedisStore

    yield check_token(config, token_missing)
    store = None if config.embedded else RedisStore(config)
    try:
        redis = check_redis(config, store)
        yield redis
        if redis[0] == FAIL:
            yield INFO, "workers", "not checked: Redis is unreachable"
        else:
            yield check_workers(config, store)
        model = check_llm(config)
        yield model
        yield check_pictures(config, model[0] == OK)
        yield check_voice(config)
        yield check_running()
        yield check_public_url(config)
        yield check_aes(config, store if redis[0] != FAIL else None)
        yield check_secret(config, from_environment)
        if redis[0] == FAIL:
            yield INFO, "push", "not checked: Redis is unreachable"
        else:
            yield check_push(config, store or MemoryStore(config))
    finally:
        if store is not None:
            store.close()
    yield check_capacity(config)
    yield check_replies(config)
    yield check_console(config)


ANSWER_SECONDS = 6.5  # a typical answer's time (a model that takes 1-12 s), for the capacity line


def check_capacity(config):
    """The load the settings carry, by the README's sizing rule: job slots / 1.5 answers in flight."""
    if config.embedded:
        slots, where = config.MPBOT_EMBEDDED_WORKERS, f"MPBOT_EMBEDDED_WORKERS={config.MPBOT_EMBEDDED_WORKERS}"
    else:
        slots = config.MPBOT_RQ_WORKERS * config.MPBOT_RQ_THREADS
        workers, threads = config.MPBOT_RQ_WORKERS, config.MPBOT_RQ_THREADS
        where = f"MPBOT_RQ_WORKERS x MPBOT_RQ_THREADS = {workers} x {threads} per worker host"
    rate = slots / 1.5 / ANSWER_SECONDS
    return (
        INFO,
        "capacity",
        f"{slots} model calls at once ({where}): about {rate:.0f} messages/s at {ANSWER_SECONDS:g} s per answer; "
        "slower answers or more traffic: more threads or worker hosts (README, Sizing)",
    )


def check_replies(config):
    """Who the model answers, and the account's own replies the bot carries."""
    who = (
        "every text is answered by the model (MPBOT_ALWAYS_ON)"
        if config.MPBOT_ALWAYS_ON
        else "the model answers in a chat started with the start command (MPBOT_ALWAYS_ON off)"
    )
    rules, menu = len(config.MPBOT_RULES), len(config.MPBOT_MENU)
    own = f"{rules} keyword rule(s), {menu} menu key(s)"
    if not rules:
        own += "; the console's keyword replies are off in developer mode: `python -m mpbot import-rules` carries them"
    return INFO, "replies", f"{who}; {own}"
