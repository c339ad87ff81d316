# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/tiny

.PHONY: install run test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# Installed once (editable: code changes need no reinstall); again only when
# setup.py changes, so `make run` / `make test` start at once the second time.
STAMP := $(VENV)/.jaxgen-installed

install: $(STAMP)

$(STAMP): setup.py | $(PY)
	$(PY) -m pip install -e '.[test,parity]'
	touch $(STAMP)

# The main job: a tiny simple-diffusion run on the embedded dataset (CPU, <5 min).
run: install
	$(PY) -m jaxgen.main --config=configs/simple_diffusion.py:tiny --workdir=$(WORKDIR)

# The whole test suite on 8 fake CPU devices, 2 worker processes.
test: install
	$(PY) -m pytest -n 2 --durations=15
