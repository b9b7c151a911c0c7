# The two commands that matter (see README.md): `make demo` and `make test`.
# Each creates .venv if needed and installs the package with the extras it needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= --disable-pip-version-check --quiet

.PHONY: demo test test-fast test-container venv-demo venv-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip

venv-demo: $(PY)
	$(PY) -m pip install $(PIP_FLAGS) -e ".[local,examples]"

venv-test: $(PY)
	$(PY) -m pip install $(PIP_FLAGS) -e ".[dev]"

## Local mode, no AWS account: emulator + Covalent server + a workflow on both services.
demo: venv-demo
	$(PY) examples/quickstart.py

## The whole test suite (unit, emulator over HTTP, real Covalent server).
test: venv-test
	$(PY) -m pytest

## Everything but the tests that start a Covalent server or build the image.
test-fast: venv-test
	$(PY) -m pytest -m "not covalent and not container"

## The job image built and run with buildah (root: installs buildah/debootstrap with apt-get if missing).
test-container: venv-test
	$(PY) -m pytest -m container

clean:
	rm -rf $(VENV) .byoc-local .pytest_cache
