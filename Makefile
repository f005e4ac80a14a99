# Two entry points (README quick start):
#   make probe   -- create .venv, install, run `gradbalance probe --model stlic --steps 500`
#   make test    -- create .venv, install, run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: setup probe test
setup: $(STAMP)

probe: $(STAMP)
	$(VENV)/bin/gradbalance probe --model stlic --steps 500

test: $(STAMP)
	$(PY) -m pytest -n 2 -q
