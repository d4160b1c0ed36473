"""The deploy recipe as shipped: deploy/nginx.conf in front of the Procfile's web line (gunicorn on
loopback), with a self-signed certificate in place of the real one. A signed message, the answer
page and its live updates, and the sub-path block all go through it; so do the limits it sets."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import requests

from conftest import FAST, ROOT, SECRET, TOKEN, WECHAT_TIMEOUT
from fakes import Rule, WeChat, free_port, text_xml

pytestmark = pytest.mark.slow  # nginx and gunicorn, as processes

DEPLOY = os.path.join(ROOT, "deploy")


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
    if found is None:
        pytest.fail("nginx is not installed: run `make test`, which installs it")
    return found


def wait_for(url: str, process, what: str, verify=True) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"{what} exited"
        try:
            requests.get(url, timeout=1, verify=verify)
            return
        except requests.RequestException:
            assert time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, fake_llm_server):
    """gunicorn (the Procfile's web line, embedded mode) behind nginx with deploy/nginx.conf."""
    tmp = tmp_path_factory.mktemp("deploy")
    app_port, http_port, https_port = free_port(), free_port(), free_port()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
        + ["-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")],
        check=True,
        capture_output=True,
    )
    with open(os.path.join(DEPLOY, "nginx.conf"), encoding="utf-8") as shipped_file:
        site = shipped_file.read()
    for shipped, here in [
        ("/etc/letsencrypt/live/bot.example.com/fullchain.pem", str(tmp / "cert.pem")),
        ("/etc/letsencrypt/live/bot.example.com/privkey.pem", str(tmp / "key.pem")),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:443 ssl;", ""),
        ("listen [::]:80;", ""),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{app_port};"),
        ("bot.example.com", "localhost"),
    ]:
        assert shipped in site, shipped
        site = site.replace(shipped, here)
    # The sub-path block, uncommented as its comment says (kept beside / here, to test both).
    site, count = re.subn(r"(?m)^    #(location /bot/ \{|    proxy_pass http://mpbot/;|\})$", r"    \1", site)
    assert count == 3
    (tmp / "nginx.conf").write_text(
        f"worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;\n"
        "events { worker_connections 1024; }\n"
        f"http {{ access_log off; client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;\n"
        f"fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;\n"
        f"{site}\n}}\n"
    )
    nginx = nginx_binary()
    check = subprocess.run([nginx, "-t", "-p", str(tmp), "-c", str(tmp / "nginx.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    clean = {name: value for name, value in os.environ.items() if not name.isupper() or name in ("PATH", "HOME")}
    env = {
        **clean,
        "PYTHONPATH": ROOT,
        "WECHAT_TOKEN": TOKEN,
        "SECRET_KEY": SECRET,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake_llm_server[1],
        "MPBOT_MODEL": "fake-model",
        "BIND": f"127.0.0.1:{app_port}",
        "PUBLIC_URL": f"https://localhost:{https_port}",
        **{name: str(value) for name, value in FAST.items()},
    }
    cert = str(tmp / "cert.pem")
    with open(tmp / "web.log", "w") as web_log:
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "python:mpbot.gunicorn_conf", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=web_log,
        )
        proxy = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"])
        try:
            wait_for(f"http://127.0.0.1:{app_port}/healthz", web, "gunicorn")
            wait_for(f"https://127.0.0.1:{https_port}/healthz", proxy, "nginx", verify=cert)
            yield {"https": f"https://127.0.0.1:{https_port}", "http": f"http://127.0.0.1:{http_port}", "cert": cert}
        finally:
            proxy.terminate()
            web.terminate()
            proxy.wait(10)
            web.wait(15)


@pytest.mark.parametrize("prefix", ["", "/bot"], ids=["root", "sub-path"])
def test_a_signed_message_and_its_answer_page_go_through_nginx(stack, fake_llm, prefix):
    wechat = WeChat(f"{stack['https']}{prefix}", TOKEN, timeout=WECHAT_TIMEOUT)
    wechat.verify = stack["cert"]  # the test's own certificate
    assert "可用命令" in wechat.say("/help", openid=f"deploy{prefix.strip('/')}")
    assert "对话已开始" in wechat.say("/chatgpt", openid=f"deploy{prefix.strip('/')}")
    question = f"慢慢回答{prefix}"
    fake_llm.rules[question] = Rule(latency=4, content="经过代理的回答")  # past the three deliveries
    log = wechat.deliver(text_xml(question, wechat.new_msgid(), f"deploy{prefix.strip('/')}"))
    reply = wechat.reply_text(log[-1].body)
    link = re.search(r'href="([^"]+)"', reply).group(1)
    token = link.rsplit("/", 1)[1]
    # The page through the proxy, at the same path under the prefix; its live update too.
    page = requests.get(f"{stack['https']}{prefix}/answer/{token}", timeout=10, verify=stack["cert"])
    assert page.status_code == 200 and "慢慢回答" in page.text
    assert f'"{token}/poll"' in page.text, "the page polls a URL relative to itself"
    poll = requests.get(f"{stack['https']}{prefix}/answer/{token}/poll", timeout=20, verify=stack["cert"])
    assert poll.status_code == 200 and poll.json()["state"] in ("generating", "done")


def test_the_proxy_sets_its_limits_and_the_client_address(stack):
    big = requests.post(f"{stack['https']}/wechat", data=b"x" * 70_000, timeout=5, verify=stack["cert"])
    assert big.status_code == 413, "nginx refuses a body over 64 KiB before the bot sees it"
    # A request through the proxy is forwarded, whatever the client claims: /metrics refuses it.
    spoofed = {"X-Forwarded-For": "127.0.0.1"}
    metrics = requests.get(f"{stack['https']}/metrics", headers=spoofed, timeout=5, verify=stack["cert"])
    assert metrics.status_code == 403
    plain = requests.get(f"{stack['http']}/wechat", allow_redirects=False, timeout=5)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")


def test_the_systemd_units_run_the_procfiles_lines():
    with open(os.path.join(ROOT, "Procfile"), encoding="utf-8") as lines:
        procfile = dict(line.strip().split(": ", 1) for line in lines if line.strip())
    for name, unit in [("web", "mpbot-web.service"), ("worker", "mpbot-worker.service")]:
        with open(os.path.join(DEPLOY, unit), encoding="utf-8") as unit_file:
            text = unit_file.read()
        start = re.search(r"(?m)^ExecStart=/opt/mpbot/\.venv/bin/(.*)$", text).group(1)
        assert start == procfile[name], (unit, start)
        assert "Restart=on-failure" in text and "EnvironmentFile=/etc/mpbot.env" in text
