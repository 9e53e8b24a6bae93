# KV: one entry point for running, testing and benchmarking.
#
#   make demo   - build and start kv-tui --demo (embedded server, a bot speaking, you joined)
#   make test   - install what the build needs, then run every test of the workspace
#   make bench  - the benchmarks of BENCHMARKS.md (playout quality: about 12 minutes)
#   make venv   - the Python the playout meter needs (PESQ-WB), in target/pyenv
#
# `deps` installs Debian packages only when they are missing, so the targets work on a fresh
# Debian machine (as root, or with sudo) and cost nothing on a prepared one.

SHELL := /bin/bash
CARGO ?= cargo
# Build: ALSA headers for cpal, libopus (and cmake as a fallback) for audiopus, pkg-config.
# Tests: tmux for the real-terminal test, PulseAudio with null sinks for the device-path test.
# Playout meter (bench/playout/score.py): a venv with the `pesq` package, which compiles ITU's
# C code against numpy (python3-dev, a C compiler); espeak-ng and sox make the speech samples;
# opus-tools (opusenc/opusdec) gives the "Opus alone" reference the meter is checked against.
DEB_PACKAGES := pkg-config cmake libasound2-dev libopus-dev tmux pulseaudio pulseaudio-utils \
  libasound2-plugins python3-venv python3-dev gcc espeak-ng sox opus-tools

# The meter's Python. System Pythons are often externally managed (PEP 668), so it gets its
# own venv; tests and the bench find it through KV_PYTHON.
PYENV := target/pyenv
PYTHON := $(PYENV)/bin/python
PY_PACKAGES := numpy scipy pesq==0.0.4
export KV_PYTHON ?= $(abspath $(PYTHON))

.PHONY: deps venv build demo test lint bench

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

venv: deps
	@if ! $(PYTHON) -c 'import pesq, numpy, scipy' 2>/dev/null; then \
	  echo "creating $(PYENV) with $(PY_PACKAGES)"; \
	  python3 -m venv $(PYENV) && \
	  $(PYTHON) -m pip install -q --disable-pip-version-check numpy scipy && \
	  $(PYTHON) -m pip install -q --disable-pip-version-check $(PY_PACKAGES); \
	fi

build: deps
	$(CARGO) build --release --workspace

demo: deps
	$(CARGO) run --release -p kv-client --bin kv-tui -- --demo

test: deps venv
	$(CARGO) test --workspace

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: deps venv
	$(CARGO) run --release -p kv-client --bin kv -- bench
	$(CARGO) build --release -p kv-server -p kv-bench
	$(CARGO) run --release -p kv-bench -- relay
	$(CARGO) build --release -p kv-client -p kv-server
	$(CARGO) run --release -p kv-tests --bin playout-bench
