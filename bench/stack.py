"""The bot's real processes for bench/: redis-server, the Procfile's web and worker lines."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import redis
import requests

from fakes import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "benchtoken"  # noqa: S105 (the fake WeChat's token, for bench/ only)


def procfile() -> dict[str, str]:
    lines = {}
    for line in open(os.path.join(ROOT, "Procfile"), encoding="utf-8"):
        name, _, command = line.partition(":")
        lines[name.strip()] = command.strip()
    return lines


class Stack:
    """redis-server, the web (gunicorn) and the RQ workers, started and stopped at will."""

    def __init__(self, llm_url: str, persist: bool = False, **overrides: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="mpbot-faults-")
        self.redis_port, self.web_port = free_port(), free_port()
        self.persist = persist
        self.redis = self.web = self.workers = None
        self.extra: list[subprocess.Popen] = []
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": ROOT,
            "WECHAT_TOKEN": TOKEN,
            "SECRET_KEY": "fault-injection-secret",
            "OPENAI_API_KEY": "sk-fake",
            "OPENAI_BASE_URL": llm_url,
            "MPBOT_MODEL": "fake",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "PUBLIC_URL": self.url,
            "PORT": str(self.web_port),
            "WEB_CONCURRENCY": "2",
            "MPBOT_RQ_WORKERS": "2",
            "MPBOT_RQ_MAINTENANCE": "5",
            "MPBOT_WECHAT_TIMEOUT": "1.0",
            "MPBOT_DELIVERY_WAIT": "0.8",
            "MPBOT_LLM_TIMEOUT": "20",
            "MPBOT_LLM_RETRIES": "1",
            "MPBOT_LOG_LEVEL": "WARNING",
            **overrides,
        }
        self.embedded = not self.env["REDIS_URL"]
        self.log = open(os.path.join(self.dir, "processes.log"), "w")  # noqa: SIM115 (closed in stop)

    def start_redis(self) -> None:
        args = ["--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.redis = subprocess.Popen([shutil.which("redis-server"), *args], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.redis_port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop_redis(self) -> None:
        self.redis.terminate()
        self.redis.wait(10)

    def _start(self, line: str, extra: str = "", **env: str) -> subprocess.Popen:
        command = f"{procfile()[line]} {extra}".strip()
        return subprocess.Popen(
            ["sh", "-c", f"exec {command}"],
            cwd=ROOT,
            env={**self.env, **env, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]},
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )

    def start_web(self) -> None:
        self.web = self._start("web")
        self._wait_healthy(self.url, self.web)

    def start_extra_web(self, extra: str = "") -> str:
        """Another web process (gunicorn, with ``extra`` arguments) on another port, sharing the
        Redis; its URL."""
        port = free_port()
        process = self._start("web", extra, PORT=str(port))
        self.extra.append(process)
        url = f"http://127.0.0.1:{port}"
        self._wait_healthy(url, process)
        return url

    @staticmethod
    def _wait_healthy(url: str, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass  # not listening yet, or listening before its worker has loaded the app
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the web process did not come up")
            time.sleep(0.1)

    def start_workers(self) -> None:
        from rq import Worker

        self.workers = self._start("worker")
        client = redis.Redis(port=self.redis_port)
        deadline = time.monotonic() + 30
        while len(Worker.all(connection=client)) < int(self.env["MPBOT_RQ_WORKERS"]):
            if time.monotonic() > deadline:
                raise RuntimeError("the RQ workers did not start")
            time.sleep(0.1)

    def signal(self, process: subprocess.Popen, sig: int) -> None:
        os.killpg(process.pid, sig)

    def start(self) -> "Stack":
        if not self.embedded:
            self.start_redis()
            self.start_workers()
        self.start_web()
        return self

    def stop(self) -> None:
        for process in (self.web, self.workers, *self.extra):
            if process is not None and process.poll() is None:
                self.signal(process, signal.SIGKILL)
                process.wait(10)
        if self.redis is not None and self.redis.poll() is None:
            self.stop_redis()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
