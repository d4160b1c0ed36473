"""Faults on the real processes (gunicorn from the Procfile, RQ workers, redis-server), through
bench/faults.py: a web process killed between deliveries, SIGTERM mid-answer, Redis restarted,
model errors. (The killed RQ worker takes RQ over a minute to notice: `make faults` runs it.)"""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

# The real processes.
pytestmark = pytest.mark.slow


def test_fault_injection_loses_nothing_and_shows_no_wechat_error(redis_url):
    # redis_url: the session's redis-server is up, so redis-server is installed.
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "bench", "faults.py"),
            "--only",
            "llm-errors,web-restart,sigterm,redis-restart",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "answers lost 0 (target 0), duplicate model calls 0 (target 0), WeChat errors 0" in result.stdout
