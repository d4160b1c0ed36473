"""What runs the model: one job per MsgId, as an RQ job or in an in-process pool.

``answer`` is the RQ job (a worker process builds its ``services.Services`` once, from the same
settings as the web's); ``run_answer`` does the work in both modes and always publishes a final
event, so no delivery waits on an answer that will never come. ``RQRunner`` and ``PoolRunner``
start jobs; neither knows what a job does.
"""

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from redis import RedisError
from rq import Callback, Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty
from rq.utils import now as utcnow
from rq.worker import SimpleWorker

from .errors import LLMError, StoreError
from .formatting import strip_think
from .inbox import Start
from .llm import build_messages
from .logs import user_tag
from .moderation import Moderator

log = logging.getLogger(__name__)

# How long a finished job keeps trying to write its final event while the store is away (a Redis
# restart takes seconds), and how often; never past its RQ job timeout (MPBOT_LLM_TIMEOUT + 30 s).
FINAL_PATIENCE = 30.0
FINAL_RETRY_PAUSE = 1.0
# An RQ job's timeout is MPBOT_LLM_TIMEOUT plus this.
JOB_TIMEOUT_MARGIN = 30


class Streamer:
    """Writes a growing answer to the store at most every ``MPBOT_STREAM_INTERVAL`` seconds (the
    first chunk at once), as the part that is new since the last write, reasoning in ``<think>``
    left out. The final event carries the whole text, so nothing held back here is lost."""

    def __init__(self, answers, msgid: str, interval: float, moderator=None) -> None:
        self.answers = answers
        self.prefix = ""  # before the answer: what a voice message said (TEXTS["heard"])
        self.moderator = moderator
        self.msgid = msgid
        self.interval = interval
        self.written = ""
        self.last = -interval
        self.first_text_at: float | None = None
        self.store_failed = False

    def __call__(self, raw: str) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        text = strip_think(raw)
        if text and self.first_text_at is None:
            self.first_text_at = now
        if self.moderator is not None:
            if self.moderator.has_banned_word(text):
                raise LLMError("banned", "a banned word in the answer")
            if self.moderator.hook is not None:
                return  # nothing is shown before the hook has allowed the whole answer
        text = self.prefix + text
        if text.startswith(self.written):
            event = {"state": "delta", "text": text[len(self.written) :]} if len(text) > len(self.written) else None
        else:
            event = {"state": "snapshot", "text": text}
        self.last = now
        try:
            if event is not None:
                self.answers.publish(self.msgid, event)
        except StoreError as exc:
            # A piece that cannot be written is not worth the answer: the model goes on, the next
            # write carries what this one missed, and the final event carries the whole text.
            if not self.store_failed:
                log.warning("job msgid=%s: a piece of the answer could not be written, going on: %s", self.msgid, exc)
            self.store_failed = True
            return
        self.written = text


def publish_final(answers, msgid: str, event: dict, patience: float) -> None:
    """Write the answer's final event, trying again for up to ``patience`` seconds while the store
    is away (Redis restarting or stalled): the answer is in hand, and giving up would lose it or,
    through RQ's retry, run the model a second time."""
    deadline = time.monotonic() + patience
    failed_at = None
    while True:
        try:
            answers.publish(msgid, event)
        except StoreError as exc:
            if time.monotonic() >= deadline:
                log.error("job msgid=%s: the final event could not be written for %g s: %s", msgid, patience, exc)
                raise
            if failed_at is None:
                failed_at = time.monotonic()
                log.warning("job msgid=%s: the final event could not be written, trying again: %s", msgid, exc)
            time.sleep(FINAL_RETRY_PAUSE)
            continue
        if failed_at is not None:
            took = time.monotonic() - failed_at
            log.info("job msgid=%s: the final event written %.1f s after the first try", msgid, took)
        return


def run_answer(services, msgid: str, sid: str, question: str, openid: str | None) -> None:
    """Answer one question with ``services`` (``services.Services``). Always ends the answer's
    stream with a final event, so no delivery or page waits for an answer that will never come,
    then starts the subscriber's next question."""
    config, answers, reader, metrics = services.config, services.answers, services.reader, services.metrics
    if answers.get(msgid).final is not None:
        # A retry of a job whose answer was written after all (RQ retries jobs it thinks died).
        log.warning("job msgid=%s outcome=already_answered: not asking the model again", msgid)
        if openid is not None:
            reader.finished(openid, msgid)
        return
    started = time.monotonic()
    # Fetching a picture, hearing a voice message and the model's answer: one deadline.
    deadline = started + config.MPBOT_LLM_TIMEOUT
    moderator = Moderator(config)
    streamer = Streamer(answers, msgid, config.MPBOT_STREAM_INTERVAL, moderator)
    llm_started = llm_ended = asked = attachment = None
    try:
        try:
            answers.publish(msgid, {"state": "started"})
            attachment = services.media.attachment(msgid)
            asked = services.media.prepare(attachment, question, deadline, openid)
            if asked.transcribed:
                # Refused words are never shown, not even as the question on the page.
                if not moderator.allowed(asked.heard, "question"):
                    raise LLMError("banned", "moderation refused what the voice message said")
                answers.publish(msgid, {"state": "heard", "text": asked.heard})
            if asked.heard and config.TEXTS.get("heard"):
                streamer.prefix = config.text("heard", heard=asked.heard)
            history = services.sessions.history(sid)
            messages = build_messages(
                config.MPBOT_SYSTEM_PROMPT, history, asked.question, config.MPBOT_CONTEXT_CHARS, asked.picture
            )
            model = (config.MPBOT_VISION_MODEL or None) if asked.picture else None
            llm_started = time.monotonic()
            text = services.llm.complete(messages, streamer, model=model, deadline=deadline)
            llm_ended = time.monotonic()
            if not moderator.allowed(text, "answer"):
                raise LLMError("banned", "moderation refused the answer")
            event = {"state": "done", "text": streamer.prefix + text}
        except LLMError as exc:
            llm_ended = llm_ended or time.monotonic()
            kind, detail = exc.kind, exc.detail
            if kind == "bad_request" and asked is not None and asked.picture is not None:
                # The usual cause: a model that takes no pictures (DeepSeek's chat models, say).
                kind = "no_vision"
                detail = (
                    f"the endpoint refused a question with a picture (model "
                    f"{config.MPBOT_VISION_MODEL or config.MPBOT_MODEL}: {detail}); set MPBOT_VISION_MODEL to "
                    "a model that takes pictures, or MPBOT_PICTURES = False"
                )
            log.warning("job msgid=%s outcome=llm_error kind=%s detail=%s", msgid, kind, detail)
            event = {"state": "error", "kind": kind}
            if openid is not None and attachment is not None and attachment.get("alone"):
                if kind == "no_vision" or kind.startswith("picture_"):
                    _forget_picture(services, openid, attachment)
        except Exception as exc:
            log.exception("job msgid=%s outcome=crash", msgid)
            event = {"state": "error", "kind": "store" if isinstance(exc, StoreError) else "internal"}
        # First the answer, which wakes the waiting deliveries; the bookkeeping after it.
        # The model's outcome is worth waiting for the store; a job that failed before it (the
        # store away at its start) tries once, and RQ's retry runs it again.
        left = config.MPBOT_LLM_TIMEOUT + JOB_TIMEOUT_MARGIN - 5 - (time.monotonic() - started)
        patience = 0.0 if event.get("kind") in ("store", "internal") else max(0.0, min(FINAL_PATIENCE, left))
        publish_final(answers, msgid, event, patience)
        if event["state"] == "done":
            services.sessions.append(sid, asked.asked, event["text"][len(streamer.prefix) :])
            metrics.observe("llm_seconds", llm_ended - llm_started)
            if streamer.first_text_at is not None:
                metrics.observe("llm_first_text_seconds", streamer.first_text_at - llm_started)
        for what in _media_done(attachment):
            metrics.count("media", kind=what, outcome="ok" if asked is not None else event.get("kind", "-"))
        if event["state"] == "error" and event["kind"] not in ("store", "internal") and asked is not None:
            metrics.count("llm_errors", kind=event["kind"])
    finally:
        if openid is not None:
            reader.finished(openid, msgid)
    log.info(
        "job msgid=%s user=%s outcome=%s kind=%s llm_ms=%s first_text_ms=%s chars=%d took_ms=%d",
        msgid,
        user_tag(openid) if openid else "-",
        event["state"],
        event.get("kind", "-"),
        _ms(llm_started, llm_ended),
        _ms(llm_started, streamer.first_text_at),
        len(event.get("text", "")),
        (time.monotonic() - started) * 1000,
    )


def _media_done(attachment: dict | None) -> list[str]:
    """What a job fetched for its question: ``voice`` (heard by our transcription), ``picture``."""
    if not attachment:
        return []
    done = ["voice"] if attachment.get("kind") == "voice" and not attachment.get("recognised") else []
    if attachment.get("kind") == "picture" or attachment.get("picture"):
        done.append("picture")
    return done


def _forget_picture(services, openid: str, attachment: dict) -> None:
    """A picture that could not be seen is not sent again with the questions after it."""
    try:
        services.media.forget_picture(openid, attachment)
    except StoreError as exc:  # the questions after it try it once more, and go on without it
        log.warning("user=%s: the failed picture could not be forgotten: %s", user_tag(openid), exc)


def _ms(start: float | None, end: float | None) -> str:
    return "-" if start is None or end is None else str(int((end - start) * 1000))


_worker = None
_worker_lock = threading.Lock()


def _worker_services():
    """The RQ worker process's services (the same composition root as the web's), built on its
    first job."""
    global _worker
    with _worker_lock:
        if _worker is None:
            from .config import load_config
            from .services import Services

            _worker = Services(load_config())
    return _worker


def answer(msgid: str, sid: str, question: str, openid: str | None = None) -> None:
    """The RQ job."""
    run_answer(_worker_services(), msgid, sid, question, openid)


def answer_failed(job, connection, exc_type, exc_value, traceback) -> None:
    """RQ's failure callback: the job died without ending its answer (its worker was killed and
    it has no retry left, or it raised past run_answer). End the answer, so no page or delivery
    waits for it, and let the subscriber's next question start."""
    if job.retries_left:  # RQ calls this before it retries: the job runs again, let it
        return
    services = _worker_services()
    msgid, _sid, _question, *rest = job.args
    if services.answers.get(msgid).final is None:
        log.error("job msgid=%s outcome=died (%s): the answer is marked failed", msgid, exc_type.__name__)
        services.answers.publish(msgid, {"state": "error", "kind": "internal"})
    if rest and rest[0]:
        services.reader.finished(rest[0], msgid)


class Worker(SimpleWorker):
    """RQ's in-process worker, running up to ``MPBOT_RQ_THREADS`` jobs at once in threads.

    A model call is almost all waiting, so one process holds many of them: a thread slot is
    taken before a job is dequeued (so no job waits inside a busy worker while others are
    idle), the job timeout is enforced per thread (RQ's TimerDeathPenalty), and on SIGTERM the
    worker stops dequeuing and lets its running jobs finish.

    A running job is known to be alive by its heartbeat: a thread renews every running job's
    entry in RQ's StartedJobRegistry every ``HEARTBEAT`` seconds, for ``MPBOT_RQ_JOB_TTL``
    seconds. When a worker is killed its jobs' entries lapse within that TTL, and the next
    registry maintenance (every ``MPBOT_RQ_MAINTENANCE`` seconds, on any live worker, also one
    whose threads are all busy) runs them again. (RQ's own heartbeat, for forking workers, gives a
    job 90 s; RQ's maintenance runs every 10 minutes.)
    """

    death_penalty_class = TimerDeathPenalty
    HEARTBEAT = 2.0

    def __init__(self, *args, **kwargs) -> None:
        from .config import load_config

        config = load_config()
        kwargs.setdefault("maintenance_interval", max(1, int(config.MPBOT_RQ_MAINTENANCE)))
        super().__init__(*args, **kwargs)
        self.threads = max(1, int(config.MPBOT_RQ_THREADS))
        self.job_ttl = max(int(config.MPBOT_RQ_JOB_TTL), int(self.HEARTBEAT) * 3)
        self._slots = threading.BoundedSemaphore(self.threads)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="rq-job")
        self._beating = threading.Event()
        self._store_failed_at = float("-inf")  # when this worker last found Redis away or slow
        self._beat_at = time.monotonic()  # when the last heartbeat that came back was sent
        threading.Thread(target=self._beat, name="rq-job-heartbeat", daemon=True).start()

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        return self.job_ttl

    def _beat(self) -> None:
        """Renew the registry entry of every job this worker runs, until the worker stops; with
        none running, see that Redis answers (so that maintenance knows of an outage)."""
        while not self._beating.wait(self.HEARTBEAT):
            executions = list(self.executions.values())
            sent = time.monotonic()
            try:
                if not executions or not self.queues:
                    self.connection.ping()
                else:
                    registry = StartedJobRegistry(queue=self.queues[0])
                    with self.connection.pipeline() as pipe:
                        for execution in executions:
                            execution.heartbeat(registry, self.job_ttl, pipe)
                        pipe.execute()
            except RedisError as exc:
                self._store_failed_at = time.monotonic()
                log.warning("heartbeat of %d running job(s) failed: %s", len(executions), exc)
                continue
            except Exception:  # the thread must live on: without it, living jobs look dead
                log.exception("heartbeat of %d running job(s) failed", len(executions))
                continue
            if time.monotonic() - sent > self.HEARTBEAT:  # Redis hung (this connection waits it out)
                self._store_failed_at = time.monotonic()
            self._beat_at = sent

    def run_maintenance_tasks(self) -> None:
        # While Redis is away, or just after, every job's heartbeat lapses, the living ones' too:
        # give their workers a TTL to renew them before any is taken for dead and run twice.
        now = time.monotonic()
        if now - self._store_failed_at < self.job_ttl + 2 * self.HEARTBEAT or now - self._beat_at > 3 * self.HEARTBEAT:
            self.last_cleaned_at = utcnow()
            return
        super().run_maintenance_tasks()

    @property
    def dequeue_timeout(self) -> int:
        # An idle worker blocks on the queue this long (RQ: worker_ttl - 15 = 405 s) before it
        # looks at the maintenance clock again.
        return max(1, min(self.worker_ttl - 15, int(self.maintenance_interval)))

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        while not self._slots.acquire(timeout=1):
            try:
                self.heartbeat()  # every thread is busy: stay registered while waiting for one
                if self.should_run_maintenance_tasks:  # and find the jobs of workers that died
                    self.run_maintenance_tasks()
            except RedisError as exc:  # the running jobs go on; try again in a second
                self._store_failed_at = time.monotonic()
                log.warning("worker heartbeat while every slot is busy failed: %s", exc)
            if self._stop_requested:
                return None
        result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        if result is None:
            self._slots.release()
        return result

    def execute_job(self, job, queue) -> None:
        try:
            execution = self.prepare_execution(job)
            self._pool.submit(self._perform, job, queue, execution)
        except BaseException:
            self._slots.release()
            raise

    def _perform(self, job, queue, execution) -> None:
        try:
            self.perform_job(job, queue, execution)
        finally:
            self._slots.release()

    def teardown(self) -> None:
        self._pool.shutdown(wait=True)  # a warm shutdown: the answers being written finish
        self._beating.set()
        super().teardown()


class RQRunner:
    """Enqueues one job per MsgId; RQ refuses a second job with the same id atomically."""

    def __init__(self, config, store) -> None:
        self.queue = Queue(config.MPBOT_QUEUE, connection=store.rq_redis, serializer=JSONSerializer)
        self.options = dict(
            job_timeout=int(config.MPBOT_LLM_TIMEOUT) + JOB_TIMEOUT_MARGIN,
            ttl=int(config.MPBOT_ANSWER_TTL),
            result_ttl=600,
            failure_ttl=int(config.MPBOT_ANSWER_TTL),
        )

    def submit(self, start: Start, openid: str) -> None:
        try:
            self.queue.enqueue(
                "mpbot.jobs.answer",
                start.msgid,
                start.sid,
                start.question,
                openid,
                job_id=f"answer-{start.msgid}",
                # RQ logs the description; the default one would put the question in the logs.
                description=f"answer MsgId {start.msgid}",
                unique=True,
                # A worker killed mid-job: RQ runs it once more (run_answer skips an answer that
                # exists), then gives up and answer_failed ends the answer.
                retry=Retry(max=1),
                on_failure=Callback("mpbot.jobs.answer_failed"),
                **self.options,
            )
        except DuplicateJobError:
            log.warning("job msgid=%s already queued; not starting it twice", start.msgid)
        except RedisError as exc:
            raise StoreError(f"cannot enqueue on Redis: {exc.__class__.__name__}: {exc}") from exc

    def exists(self, msgid: str) -> bool:
        """Whether RQ holds the job of ``msgid`` (queued, running, or recently ended)."""
        try:
            return Job.exists(f"answer-{msgid}", connection=self.queue.connection)
        except RedisError as exc:
            raise StoreError(f"cannot read the queue on Redis: {exc.__class__.__name__}: {exc}") from exc

    def in_flight(self) -> tuple[int, int]:
        """Jobs waiting in the queue, and jobs a worker is running (on every host)."""
        try:
            return self.queue.count, StartedJobRegistry(queue=self.queue).count
        except RedisError as exc:
            raise StoreError(f"cannot read the queue on Redis: {exc.__class__.__name__}: {exc}") from exc

    def close(self) -> None:
        pass


class PoolRunner:
    """Embedded mode: a thread pool in this process in place of RQ workers, running ``work``
    (msgid, sid, question, openid) for each job. (RQ's workers install signal handlers, which only
    the main thread may do, so they cannot run inside a web server.)"""

    def __init__(self, config, work: Callable[[str, str, str, str], None]) -> None:
        self.work = work
        self.pool = ThreadPoolExecutor(config.MPBOT_EMBEDDED_WORKERS, thread_name_prefix="mpbot-llm")
        self._lock = threading.Lock()
        self._queued = self._running = 0

    def submit(self, start: Start, openid: str) -> None:
        with self._lock:
            self._queued += 1
        self.pool.submit(self._run, start.msgid, start.sid, start.question, openid)

    def _run(self, *args) -> None:
        with self._lock:
            self._queued, self._running = self._queued - 1, self._running + 1
        try:
            self.work(*args)
        finally:
            with self._lock:
                self._running -= 1

    def exists(self, msgid: str) -> bool:
        # One process holds both the delivery and the pool: if it died, so did everything else.
        return True

    def in_flight(self) -> tuple[int, int]:
        with self._lock:
            return self._queued, self._running

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
