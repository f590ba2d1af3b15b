# The two commands a new user needs: `make run` and `make test`. Everything else is for maintainers.
SHELL := /bin/bash
# The first interpreter that actually runs and is 3.11+ (pyenv shims exist for versions that do not).
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check --quiet --require-hashes

.PHONY: run test fuzz screenshots lint format lock clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Billable needs Python 3.11 or newer: make PYTHON=/path/to/python3.11 …"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: requirements.lock | $(BIN)/python
	$(PIP_INSTALL) -r requirements.lock
	@touch $@

$(VENV)/.installed-dev: requirements-dev.lock | $(BIN)/python
	$(PIP_INSTALL) -r requirements-dev.lock
	@touch $@

## make run: install, migrate, load the demo project, serve API + admin + worker on $PORT (8000).
run: $(VENV)/.installed-run
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py load_demo
	$(BIN)/python manage.py serve

## make test: install and run the whole suite (SQLite by default; DATABASE_URL for PostgreSQL),
## one pytest worker per core (PYTEST_ARGS="-n 0" runs it in one process).
PYTEST_ARGS ?= -n auto
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make fuzz: schemathesis against the served app (PostgreSQL, seeded data; see .ci/fuzz).
fuzz: $(VENV)/.installed-dev
	.ci/fuzz

## make screenshots: the browser tests' screenshots of the back office, into docs/screenshots/
## (docs/admin.md shows them). Needs Chromium (.ci/system-packages installs it).
screenshots: $(VENV)/.installed-dev
	BILLABLE_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -m browser -n 0 tests/browser/test_backoffice_month.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## make lock: re-pin dependencies after editing pyproject.toml.
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --strip-extras --generate-hashes --no-emit-index-url -o requirements.lock pyproject.toml
	$(BIN)/pip-compile --quiet --strip-extras --generate-hashes --no-emit-index-url --extra dev -o requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) staticfiles
