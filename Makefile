# Two entry points (README quick start):
#   make probe   -- create .venv, install the packages, run `gradbalance probe --model stlic --steps 500`
#   make test    -- create .venv, install the packages and the test extras, run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

# the test extras (pytest, jupyter, lightning, accelerate) are not needed to probe: installed for `make test` only
$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

.PHONY: setup probe test
setup: $(DEV_STAMP)

probe: $(STAMP)
	$(VENV)/bin/gradbalance probe --model stlic --steps 500

test: $(DEV_STAMP)
	$(PY) -m pytest -n 2 -q
