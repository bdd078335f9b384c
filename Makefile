# Everything runs from the virtual environment in .venv, installed from the
# pinned requirements.lock on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install nginx bench-validate infra-up infra-down infra-status demo test lint \
	format contracts test-faults bench clean

$(INSTALLED): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(INSTALLED)

# The gateway tests run Debian's nginx in front of the API.
nginx:
	sh scripts/install-nginx.sh

infra-up: install
	$(PY) -m infra up

infra-down: install
	$(PY) -m infra down

infra-status: install
	$(PY) -m infra status

demo: install
	$(PY) scripts/demo.py

# Not a test: token validation against ceilings measured in the same run.
bench-validate: install
	$(PY) -m bench --only validation

# Not a test: every benchmark, each figure against a ceiling of the same run.
bench: install
	$(PY) -m bench

lint: install
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

contracts: install
	$(PY) scripts/contracts.py write

test: lint nginx
	$(PY) -m pytest

test-faults: install
	$(PY) -m pytest -m faults -s tests/faults

clean: infra-down
	rm -rf .run
