# The two commands that matter (see README.md): `make demo` and `make test`.
# Each creates .venv if needed and installs the package with the extras it needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= --disable-pip-version-check --quiet

CONTAINER_CACHE ?= $(or $(BYOC_CONTAINER_CACHE),/var/tmp/byoc-container-cache)

.PHONY: demo test test-fast test-container test-gpu-image venv-demo venv-test clean distclean

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

## The whole test suite (unit, emulator over HTTP, real Covalent server, the CPU image, packaging).
## The GPU image's tests run only if that image is built (make test-gpu-image).
test: venv-test
	$(PY) -m pytest

## Everything but the tests that start a Covalent server, build an image or build the sdist.
test-fast: venv-test
	$(PY) -m pytest -m "not covalent and not container and not packaging and not slow"

## The job image built and run with buildah (root: installs buildah/debootstrap with apt-get if missing).
test-container: venv-test
	$(PY) -m pytest -m container

## The GPU image built with build_and_push.sh --gpu (about 3 GB of downloads, 7.6 GB) and run.
test-gpu-image: venv-test
	BYOC_BUILD_GPU_IMAGE=1 $(PY) -m pytest -m gpu_image

clean:
	rm -rf $(VENV) .byoc-local .pytest_cache build dist byoc_executor.egg-info

## clean, and what the tests made outside the tree: checkov's venv, the SageMaker SDK v2's venv
## (tests/test_outside_sagemaker.py), the buildah images built on the container tests' base
## (images you tagged from other bases stay), the container cache.
distclean:
	python3 tests/container_support.py remove-images
	$(MAKE) clean
	rm -rf .venv-tools .venv-sagemaker-v2 "$(CONTAINER_CACHE)"
