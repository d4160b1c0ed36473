"""Pictures and voice: what a subscriber sends besides text, made ready for the model.

The webhook never fetches anything. A picture or voice message leaves it as an *attachment*, a
small JSON reference (``{"kind": "picture", "url": PicUrl, "media_id": MediaId}`` or ``{"kind":
"voice", "media_id": ..., "format": "amr"}``), kept under its MsgId (``keys.media``). The job that
answers the MsgId (``jobs.run_answer``) fetches, converts and transcribes within its own deadline,
so the retry window, the fallback page and one model call per message hold as for text:

- a picture is fetched from PicUrl, only when its host is in ``MPBOT_MEDIA_HOSTS`` (a URL in a
  message is no licence to fetch anything), else by its MediaId from WeChat's media API; checked
  and scaled down with Pillow, and sent as a ``data:`` URL, so that endpoints that cannot reach
  WeChat's CDN still see it;
- a voice message without WeChat's own ``Recognition`` is fetched by its MediaId, converted from
  AMR (or speex) to 16 kHz WAV with PyAV (FFmpeg's decoders, in a wheel: nothing to install
  besides the requirements), and transcribed by ``POST /audio/transcriptions``.

Pictures and audio live in memory for the call only: never written to the store, a file or a log.
A failure is a ``MediaError`` whose ``kind`` the subscriber has a sentence for
(``TEXTS["error_<kind>"]``): ``picture_expired``, ``voice_too_large``, ...
"""

import base64
import io
import json
import logging
import re
import threading
import time
import urllib.parse
import wave
from dataclasses import dataclass

import openai
import requests
import urllib3

from . import green
from .errors import LLMError
from .formatting import xml_safe
from .llm import llm_error
from .logs import user_tag

log = logging.getLogger(__name__)

PICTURE, VOICE = "picture", "voice"
# Picture formats taken (what WeChat's clients send, and what a model's image input takes; MPO is
# the JPEG some phone cameras write, with a second picture inside).
FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP")
# Pixels a picture may have (a 50-megapixel photo): a JPEG decodes straight to an eighth of its
# size, so this costs little; other formats decode whole (4 bytes a pixel), so they may have
# fewer. A bigger one, or a small file that claims to be huge (a decompression bomb), is refused
# before it is decoded.
MAX_PIXELS = 50_000_000
MAX_PIXELS_WHOLE = 16_000_000
# Pictures and audio decoded at once in a process (RQ threads, the embedded pool): a picture can
# take a hundred MB or more for a moment, so a burst waits its turn rather than exhausting memory.
# (A gevent web worker uses green.off_the_loop's two threads instead: a thread's semaphore would
# block its event loop.)
DECODING = threading.BoundedSemaphore(2)
# WeChat's voice messages last at most 60 s; audio past this is not decoded.
MAX_SECONDS = 120
RATE = 16_000  # the WAV sent for transcription: 16 kHz, mono, 16-bit
TRANSCRIPT_CHARS = 2000  # at most this much of a transcript is taken
# Files are read as they arrive (read_capped), before any decompression: ask for them as they are.
IDENTITY = {"Accept-Encoding": "identity"}
_MEDIA_ID = re.compile(r"[A-Za-z0-9_\-]{1,256}")
_FORMAT = re.compile(r"[A-Za-z0-9]{1,16}")


class MediaError(LLMError):
    """A picture or voice message that cannot be made ready; ``kind`` names its sentence."""


# --- the webhook: a message's attachment ----------------------------------------------------------


def picture_of(message) -> dict | None:
    """The attachment of an image message, or None if neither its PicUrl nor its MediaId is
    usable (checked for shape only; nothing is fetched here)."""
    url = getattr(message, "img", None) or ""
    media_id = vars(message).get("MediaId") or ""  # (WeRoBot's image message has no entry for it)
    url = url if isinstance(url, str) and len(url) <= 2048 and url.startswith(("http://", "https://")) else ""
    media_id = media_id if isinstance(media_id, str) and _MEDIA_ID.fullmatch(media_id) else ""
    if not url and not media_id:
        return None
    return {"kind": PICTURE, "url": url, "media_id": media_id}


def voice_of(message) -> dict | None:
    """The attachment of a voice message (its MediaId and format), or None."""
    media_id = getattr(message, "media_id", None) or ""
    fmt = getattr(message, "format", None) or ""
    if not isinstance(media_id, str) or not _MEDIA_ID.fullmatch(media_id):
        return None
    fmt = fmt.lower() if isinstance(fmt, str) and _FORMAT.fullmatch(fmt) else ""
    return {"kind": VOICE, "media_id": media_id, "format": fmt}


def host_allowed(url: str, hosts) -> bool:
    """Whether ``url`` is http(s) on one of ``hosts`` (a host, or host:port for another port), with
    no credentials in it."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or parts.username or parts.password or not parts.hostname:
        return False
    name = parts.hostname.lower() if port is None else f"{parts.hostname.lower()}:{port}"
    return name in {host.lower() for host in hosts}


# --- the job: fetch, check, convert ---------------------------------------------------------------


def decode(work, *args):
    """``work(*args)`` (a picture or audio to decode), at most two at once in a process: under
    gevent in the media's own two real threads (off the event loop), elsewhere (RQ's job threads,
    the embedded pool) behind a semaphore."""
    if green.patched():
        return green.off_the_loop("media", work, *args)
    with DECODING:
        return work(*args)


def picture_data_url(data: bytes, max_side: int) -> str:
    """A picture as a JPEG ``data:`` URL, no side longer than ``max_side``, turned the way the
    phone held it; MediaError ``picture_unreadable`` if it is not a picture, ``picture_too_large``
    if it has too many pixels."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in FORMATS:
                raise MediaError("picture_unreadable", f"a {image.format} file, not a picture format taken")
            width, height = image.size
            limit = MAX_PIXELS if image.format in ("JPEG", "MPO") else MAX_PIXELS_WHOLE
            if width * height > limit:
                raise MediaError("picture_too_large", f"{width}x{height} pixels ({image.format})")
            image.draft("RGB", (max_side, max_side))  # a JPEG decodes straight to a smaller size
            image.thumbnail((max_side, max_side))  # first: every later copy is of the small one
            picture = ImageOps.exif_transpose(image)
            if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
                picture = picture.convert("RGBA")
                background = Image.new("RGB", picture.size, "white")
                background.paste(picture, mask=picture.getchannel("A"))
                picture = background
            picture = picture.convert("RGB")
            out = io.BytesIO()
            picture.save(out, "JPEG", quality=85)
    except MediaError:
        raise
    except Image.DecompressionBombError:
        raise MediaError("picture_too_large", "more pixels than Pillow decodes (a decompression bomb?)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # (UnidentifiedImageError is an OSError)
        raise MediaError("picture_unreadable", f"Pillow: {exc.__class__.__name__}") from None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def to_wav(data: bytes) -> bytes:
    """Voice (AMR, speex, or anything FFmpeg reads) as 16 kHz mono 16-bit WAV, at most
    ``MAX_SECONDS`` of it; MediaError ``voice_unreadable`` if it cannot be decoded."""
    import av

    pcm = bytearray()
    limit = MAX_SECONDS * RATE * 2
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise MediaError("voice_unreadable", "no audio in the file")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    pcm += bytes(out.planes[0])[: out.samples * 2]
                if len(pcm) >= limit:
                    break
            for out in resampler.resample(None):
                pcm += bytes(out.planes[0])[: out.samples * 2]
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise MediaError("voice_unreadable", f"FFmpeg: {exc.__class__.__name__}") from None
    if not pcm:
        raise MediaError("voice_unreadable", "no sound in the file")
    out_file = io.BytesIO()
    with wave.open(out_file, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(bytes(pcm[:limit]))
    return out_file.getvalue()


@dataclass
class Prepared:
    """A question as the model is to read it, once its attachment is ready."""

    question: str  # what the model reads: the text, a picture's instruction, a voice's transcript
    asked: str  # what the session's history keeps as the question
    picture: str | None = None  # a data: URL
    heard: str | None = None  # a voice message's transcript, shown before the answer
    transcribed: bool = False  # heard by our transcription (not WeChat's Recognition)


class Media:
    """Attachments in the store, and what a job does with them."""

    def __init__(self, config, store, keys, api=None) -> None:
        self.config = config
        self.store = store
        self.keys = keys
        self.api = api  # push.WeChatAPI, with WECHAT_APPID and WECHAT_APPSECRET; None without
        self.http = requests.Session()
        self.stt = None
        if self.can_transcribe:
            self.stt = openai.OpenAI(
                api_key=config.MPBOT_STT_API_KEY or config.OPENAI_API_KEY or "unset",
                base_url=config.MPBOT_STT_BASE_URL or config.OPENAI_BASE_URL or None,
                timeout=config.MPBOT_STT_TIMEOUT,
                max_retries=0,  # transcribe() tries again itself, within the job's deadline
            )

    @property
    def can_transcribe(self) -> bool:
        """Whether a voice message without WeChat's Recognition can be heard: its audio is
        fetched with the account's access_token, and a transcription model is set."""
        return self.api is not None and bool(self.config.MPBOT_STT_MODEL)

    # --- the webhook ---------------------------------------------------------------------------

    def attach(self, msgid: str, attachment: dict) -> None:
        """Keep ``attachment`` for the job of ``msgid``."""
        self.store.set(self.keys.media(msgid), json.dumps(attachment), self.config.MPBOT_MEDIA_KEEP)

    def remember_picture(self, openid: str, attachment: dict) -> None:
        """The subscriber's latest picture: questions in the next ``MPBOT_PICTURE_TTL`` seconds go
        with it (/clear and /stop forget it: ``Sessions``)."""
        self.store.set(self.keys.picture(openid), json.dumps(attachment), self.config.MPBOT_PICTURE_TTL)

    def recent_picture(self, openid: str) -> dict | None:
        raw = self.store.get(self.keys.picture(openid))
        return _loads(raw)

    # --- the job ---------------------------------------------------------------------------------

    def attachment(self, msgid: str) -> dict | None:
        return _loads(self.store.get(self.keys.media(msgid)))

    def prepare(self, attachment: dict | None, question: str, deadline: float, openid: str | None) -> Prepared:
        """The question as the model is to read it: with its picture, or a voice message heard."""
        attachment = attachment or {}
        kind = attachment.get("kind")
        heard, transcribed = None, False
        if kind == VOICE and not attachment.get("recognised"):
            heard = question = self.transcribe(attachment, deadline, openid)
            transcribed = True
        elif attachment.get("recognised"):  # WeChat heard it (Recognition): the question is that
            heard = question
        found = attachment if kind == PICTURE else attachment.get("picture")  # a picture sent lately
        if not found:
            return Prepared(question, question, heard=heard, transcribed=transcribed)
        alone = bool(attachment.get("alone"))
        try:
            data = self.fetch_picture(found, deadline, openid)
            picture = decode(picture_data_url, data, self.config.MPBOT_PICTURE_MAX_SIDE)
            del data
        except MediaError as exc:
            if alone:
                raise
            # The picture's own message said why it could not be seen: a question after it is
            # answered as it stands.
            log.info("user=%s: the picture sent lately failed again (%s): asked without it", _who(openid), exc)
            return Prepared(question, question, heard=heard, transcribed=transcribed)
        # The picture message itself asks the admin's instruction; a question after it, itself.
        ask = self.config.MPBOT_PICTURE_PROMPT if alone else question
        return Prepared(ask, question, picture=picture, heard=heard, transcribed=transcribed)

    def forget_picture(self, openid: str, attachment: dict) -> None:
        """The subscriber's latest picture could not be seen (or the model takes none): questions
        after it go alone, unless another picture came meanwhile."""
        self.store.delete_if(self.keys.picture(openid), json.dumps(attachment))

    def fetch_picture(self, attachment: dict, deadline: float, openid: str | None) -> bytes:
        url, media_id = attachment.get("url") or "", attachment.get("media_id") or ""
        who = _who(openid)
        if url and host_allowed(url, self.config.MPBOT_MEDIA_HOSTS):
            try:
                return self._download(url, deadline, "picture")
            except MediaError as exc:
                if exc.kind == "picture_too_large" or self.api is None or not media_id:
                    raise
                log.info("picture from user=%s: PicUrl failed (%s), trying its MediaId", who, exc.detail)
        elif url:
            host = (urllib.parse.urlsplit(url).hostname or "?")[:64]
            log.warning(
                "picture from user=%s: PicUrl's host %s is not in MPBOT_MEDIA_HOSTS, not fetched%s",
                who,
                host,
                "; trying its MediaId" if self.api is not None and media_id else "",
            )
        if self.api is not None and media_id:
            return self._from_api(media_id, deadline, "picture")
        if not url:
            raise MediaError("picture_unavailable", "no PicUrl, and no AppSecret to fetch its MediaId")
        raise MediaError("picture_unavailable", "PicUrl not fetched, and no AppSecret to fetch its MediaId")

    def transcribe(self, attachment: dict, deadline: float, openid: str | None) -> str:
        if self.stt is None or self.api is None:
            raise MediaError("voice_off", "transcription is not set up")
        data = self._from_api(attachment["media_id"], deadline, "voice")
        wav = decode(to_wav, data)
        del data
        options = {"language": self.config.MPBOT_STT_LANGUAGE} if self.config.MPBOT_STT_LANGUAGE else {}
        for attempt in range(2):  # once more after a 429, a 5xx or a refused connection, if time allows
            left = deadline - time.monotonic()
            if left <= 0.5:
                raise MediaError("timeout", "no time left to transcribe")
            try:
                result = self.stt.audio.transcriptions.create(
                    model=self.config.MPBOT_STT_MODEL,
                    file=("voice.wav", wav, "audio/wav"),
                    timeout=min(self.config.MPBOT_STT_TIMEOUT, left),
                    **options,
                )
                break
            except Exception as exc:
                error = llm_error(exc)
                if attempt == 0 and error.kind in ("rate_limited", "unavailable", "unreachable"):
                    log.info("transcription failed (%s), trying once more", error.kind)
                    time.sleep(0.5)
                    continue
                raise MediaError("voice_failed", f"transcription: {error.kind}: {error.detail}") from None
        text = result if isinstance(result, str) else getattr(result, "text", "") or ""
        text = " ".join(xml_safe(text).split())[:TRANSCRIPT_CHARS]
        if not text:
            raise MediaError("voice_empty", "the transcription is empty")
        return text

    def _from_api(self, media_id: str, deadline: float, what: str) -> bytes:
        from .push import PushError

        try:
            return self.api.media(media_id, self.config.MPBOT_MEDIA_MAX_BYTES, self._timeout(deadline, what))
        except PushError as exc:
            kind = {"expired": "expired", "too_large": "too_large"}.get(exc.reason, "unavailable")
            raise MediaError(f"{what}_{kind}", f"WeChat's media API: {exc.detail}") from None

    def _timeout(self, deadline: float, what: str) -> float:
        left = min(self.config.MPBOT_MEDIA_TIMEOUT, deadline - time.monotonic())
        if left <= 0.2:
            raise MediaError(f"{what}_unavailable", "no time left to fetch it")
        return left

    def _download(self, url: str, deadline: float, what: str) -> bytes:
        """GET ``url`` (no redirects: a redirect could lead anywhere), at most
        ``MPBOT_MEDIA_MAX_BYTES`` within ``MPBOT_MEDIA_TIMEOUT`` seconds."""
        timeout = self._timeout(deadline, what)
        ends = time.monotonic() + timeout
        limit = self.config.MPBOT_MEDIA_MAX_BYTES
        try:
            with self.http.get(url, timeout=timeout, stream=True, allow_redirects=False, headers=IDENTITY) as response:
                if response.status_code != 200:
                    raise MediaError(f"{what}_unavailable", f"HTTP {response.status_code}")
                return read_capped(response, limit, ends, what)
        except requests.RequestException as exc:
            # (The exception's text can carry the URL: name its class only.)
            raise MediaError(f"{what}_unavailable", f"{exc.__class__.__name__}") from None

    def close(self) -> None:
        self.http.close()
        if self.api is not None:
            self.api.close()
        if self.stt is not None:
            self.stt.close()


def read_capped(response, limit: int, ends: float, what: str) -> bytes:
    """A streamed response's body, MediaError ``<what>_too_large`` past ``limit`` bytes and
    ``<what>_unavailable`` past the monotonic time ``ends``."""
    try:
        declared = int(response.headers.get("Content-Length", "0"))
    except ValueError:
        declared = 0
    if declared > limit:
        raise MediaError(f"{what}_too_large", f"{declared} bytes, over MPBOT_MEDIA_MAX_BYTES={limit}")
    body = bytearray()
    try:
        # read1: whatever has come, at once; a server that sends a byte at a time never trips the
        # read timeout, so the time is checked after each read.
        while chunk := response.raw.read1(64 * 1024):
            body += chunk
            if len(body) > limit:
                raise MediaError(f"{what}_too_large", f"over MPBOT_MEDIA_MAX_BYTES={limit} bytes")
            if time.monotonic() > ends:
                raise MediaError(f"{what}_unavailable", "too slow to arrive")
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise MediaError(f"{what}_unavailable", exc.__class__.__name__) from None
    return bytes(body)


def _who(openid: str | None) -> str:
    return user_tag(openid) if openid else "-"


def _loads(raw: str | None) -> dict | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
