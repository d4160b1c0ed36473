"""Starting where it cannot work: a port in use, Redis not answering, links no phone can open.
Each is one line that names the fix and an exit non-zero, soon, so that a supervisor's restart
policy applies (`mpbot serve`, the Procfile's web and worker lines)."""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TOKEN
from fakes import free_port
from mpbot.startup import public_url_problem


def run(args, env, cwd=ROOT, timeout=40) -> tuple[subprocess.CompletedProcess, float]:
    clean = {name: value for name, value in os.environ.items() if not name.isupper() or name in ("PATH", "HOME")}
    started = time.monotonic()
    result = subprocess.run(
        args,
        cwd=cwd,
        env={**clean, "PYTHONPATH": ROOT, "WECHAT_TOKEN": TOKEN, "SECRET_KEY": "s" * 32, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, time.monotonic() - started


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture
def busy_port():
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))  # noqa: S104 (as a web server would)
        listener.listen()
        yield listener.getsockname()[1]


WEB = [sys.executable, "-m", "gunicorn", "--config", "python:mpbot.gunicorn_conf", "wsgi:app"]  # the Procfile's


@pytest.mark.slow  # it starts processes
def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path, busy_port):
    shutil.copy(os.path.join(ROOT, "Procfile"), tmp_path / "Procfile")
    result, seconds = run([sys.executable, "-m", "mpbot", "serve", "--port", str(busy_port)], {}, cwd=tmp_path)
    assert result.returncode != 0 and seconds < 10
    (line,) = errors(result)
    assert f"port {busy_port} is already in use" in line and "PORT" in line


@pytest.mark.slow  # it starts processes
def test_the_procfile_web_line_on_a_port_in_use_says_so_in_one_line(busy_port):
    result, seconds = run(WEB, {"PORT": str(busy_port)})
    assert result.returncode != 0 and seconds < 10
    (line,) = errors(result)
    assert f"port {busy_port} is already in use" in line and "set PORT" in line


@pytest.mark.slow  # it starts processes
@pytest.mark.parametrize(
    "command",
    [["-m", "mpbot", "serve"], ["-m", "mpbot", "worker"], WEB[1:]],
    ids=["serve", "worker", "web"],
)
def test_redis_that_does_not_answer_is_one_line_and_an_exit_within_30_s(tmp_path, command):
    shutil.copy(os.path.join(ROOT, "Procfile"), tmp_path / "Procfile")
    dead = free_port()
    env = {"REDIS_URL": f"redis://:hunter2@127.0.0.1:{dead}/0", "PORT": str(free_port())}
    result, seconds = run([sys.executable, *command], env, cwd=tmp_path if "serve" in command else ROOT)
    assert result.returncode != 0 and seconds < 30
    (line,) = errors(result)
    assert f"Redis at redis://127.0.0.1:{dead}/0 does not answer" in line and "REDIS_URL" in line
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:8000", "not on the internet"),
        ("https://localhost", "not on the internet"),
        ("https://192.168.1.20/bot", "not on the internet"),
        ("https://10.0.0.5", "not on the internet"),
        ("http://bot.example.com", "plain http"),
        ("https://bot.example.com/bot", None),
        ("https://203.0.113.10", "not on the internet"),  # documentation range: not global
        ("https://8.8.8.8", None),
    ],
)
def test_links_no_phone_can_open_are_named(url, words):
    problem = public_url_problem(url)
    assert (problem is None) if words is None else (words in problem and "PUBLIC_URL" in problem)


@pytest.mark.parametrize("bind", ["unix:/run/mpbot.sock", "fd://3"])
def test_binds_that_are_not_a_tcp_port_are_not_probed(bind):
    from mpbot.startup import port_problem

    assert port_problem(bind) is None


def test_a_port_handed_over_by_gunicorn_or_systemd_is_not_probed(busy_port, monkeypatch):
    from mpbot.startup import port_problem

    assert "already in use" in port_problem(f"0.0.0.0:{busy_port}")
    assert "already in use" in port_problem(f"tcp://0.0.0.0:{busy_port}")
    assert "already in use" in port_problem(str(busy_port)), "a bare port, as gunicorn takes it"
    monkeypatch.setenv("GUNICORN_FD", "5")  # USR2: the new master inherits the old one's socket
    assert port_problem(f"0.0.0.0:{busy_port}") is None
