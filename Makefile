# make run: set up and serve the bot.  make test: set up and pass every test.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: run test test-fast chat check stats bench faults lint format redis-server chromium nginx clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-deps: requirements.txt | $(BIN)/python
	$(PIP) -r requirements.txt
	touch $@

$(VENV)/.test-deps: requirements.txt tests/requirements.txt | $(BIN)/python
	$(PIP) -r tests/requirements.txt
	touch $@

run: $(VENV)/.run-deps
	$(BIN)/python -m mpbot serve

# The admin's tools, against the bot `make run` started (python -m mpbot <tool> --help for more).
chat check stats: $(VENV)/.run-deps
	$(BIN)/python -m mpbot $@

# The benchmark: window, added latency, capacity, memory, in both modes (bench/bench.py; ~5 min).
bench: $(VENV)/.test-deps redis-server
	$(BIN)/python bench/bench.py

# Fault injection on the real processes, with its figures (bench/faults.py; about three minutes).
faults: $(VENV)/.test-deps redis-server
	$(BIN)/python bench/faults.py

# Three test processes at once (pytest-xdist): the tests mostly wait on WeChat's timeouts.
test: $(VENV)/.test-deps redis-server chromium nginx lint
	cd tests && ../$(BIN)/python -m pytest -n 3

# The fast lane: every test that starts no process, opens no browser and waits out no timeout
# (the state machine, the store contract in memory, the webhook, commands, pages; under a minute).
test-fast: $(VENV)/.test-deps lint
	cd tests && ../$(BIN)/python -m pytest -m "not slow"

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.test-deps
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The tests start their own redis-server on a free port; this only makes sure the binary exists.
redis-server:
	@command -v redis-server >/dev/null || { \
		echo "redis-server is missing: installing it with apt-get"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server; }

# The deploy test runs deploy/nginx.conf in front of gunicorn, with a certificate made by openssl.
nginx:
	@{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null && command -v openssl >/dev/null || { \
		echo "nginx or openssl is missing: installing them with apt-get"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx openssl \
		|| test -x /usr/sbin/nginx; }  # its own service may fail to start (port 80 taken): the tests run their own

# The answer page's browser test drives Debian's headless Chromium through its chromedriver; a
# Chinese font (WenQuanYi Micro Hei, 5 MB) so that its screenshots show the pages as phones do.
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && fc-list :lang=zh | grep -q . || { \
		echo "chromium, chromedriver or a Chinese font is missing: installing them with apt-get"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver \
		fonts-wqy-microhei; }

clean:
	rm -rf $(VENV) .pytest_cache tests/.pytest_cache .ruff_cache
