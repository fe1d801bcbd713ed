# Two commands do all the set-up on a fresh machine:
#   make demo   - the whole product on an embedded server, dashboard on :5000
#   make test   - the full test suite (installs chromium and prometheus if missing)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup system-packages lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Debian packages the browser and metrics tests drive.
system-packages:
	@if [ ! -x /usr/bin/chromium ] || ! command -v prometheus >/dev/null; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium prometheus; \
	fi

demo: $(STAMP)
	$(BIN)/streamheal demo

test: $(STAMP) system-packages
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check streamheal tests
	$(BIN)/mypy
