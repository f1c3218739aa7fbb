# s2l-tools: `make demo` and `make test` set up everything themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.s2l-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: all venv system-deps cellprofiler-venv test demo clean help

help:
	@echo "make demo   - create .venv, generate a synthetic dataset, train, predict, evaluate"
	@echo "make test   - create .venv, install system packages (ImageJ, Jython, Xvfb), run the tests"

# torch and torchvision go first, together, pinned (see DEVELOPERS.md).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

# Real ImageJ 1 + Jython (cross-checks of ROI rasterisation, Fiji scripts), Xvfb
# for the ROI Manager, and a JDK for CellProfiler's javabridge.
system-deps:
	@if [ -f /usr/share/java/ij.jar ] && [ -f /usr/share/java/jython.jar ] \
	    && command -v xvfb-run >/dev/null && command -v javac >/dev/null; then \
	    echo "system packages: present"; \
	else \
	    $(SUDO) apt-get update -q && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	        imagej jython xvfb xauth openjdk-17-jdk-headless; \
	fi

# CellProfiler 4.2.8.1 headless in its own Python 3.9 venv (cached: built once).
CP_VENV ?= .cpvenv
CP_STAMP := $(CP_VENV)/.s2l-cp-ok
$(CP_STAMP): scripts/build_cellprofiler_venv.sh | system-deps
	rm -f $@ && CP_VENV=$(CP_VENV) bash scripts/build_cellprofiler_venv.sh

cellprofiler-venv: $(CP_STAMP)

test: venv system-deps cellprofiler-venv
	CP_VENV=$(abspath $(CP_VENV)) $(PY) -m pytest $(PYTEST_ARGS)

demo: venv
	$(PY) -m s2l_tools.cli.demo --out demo_out --fresh

clean:
	rm -rf $(VENV) $(CP_VENV) demo_out .pytest_cache
