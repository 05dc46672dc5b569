# Two commands do everything on a fresh machine (Python 3.10+, Linux x86_64):
#   make demo   make a tiny SigLIP-2 checkpoint, export it, serve it, embed an image and a text
#   make test   the test suite, against a real tritonserver (what CI runs)
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: setup demo test lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/demo.sh

test: setup
	$(PYTHON) -m pytest tests

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy
