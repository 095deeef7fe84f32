# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint bench clean sysdeps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Debian's Chromium renders pages in the browser tests; SpamAssassin scores messages for
# `mailer check`, whose tests run it for real.
sysdeps:
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo "Installing Debian chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; \
	fi
	@if ! command -v spamassassin >/dev/null; then \
	  echo "Installing Debian spamassassin for the preflight checks"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 spamassassin >/dev/null; \
	fi

# axe-core (from npm, pinned by package-lock.json) checks the served pages for WCAG 2.2 AA.
node_modules/.installed: package.json package-lock.json
	@if ! command -v npm >/dev/null; then \
	  echo "Installing Debian nodejs and npm for axe-core"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	fi
	npm ci --no-audit --no-fund --silent
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m mailer.cli.demo

test: $(VENV)/.installed sysdeps node_modules/.installed
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

clean:
	rm -rf build outbox .mailer subscribers.sqlite subscribers.sqlite-wal subscribers.sqlite-shm
