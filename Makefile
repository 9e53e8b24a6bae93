# KV: one entry point for running, testing and benchmarking.
#
#   make demo   - build and start kv-tui --demo (embedded server, a bot speaking, you joined)
#   make test   - install what the build needs, then run every test of the workspace
#   make bench  - the benchmarks of BENCHMARKS.md
#
# `deps` installs Debian packages only when they are missing, so the targets work on a fresh
# Debian machine (as root, or with sudo) and cost nothing on a prepared one.

SHELL := /bin/bash
CARGO ?= cargo
# Build: ALSA headers for cpal, libopus (and cmake as a fallback) for audiopus, pkg-config.
# Tests: tmux for the real-terminal test, PulseAudio with null sinks for the device-path test.
DEB_PACKAGES := pkg-config cmake libasound2-dev libopus-dev tmux pulseaudio pulseaudio-utils libasound2-plugins

.PHONY: deps build demo test lint bench

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: deps
	$(CARGO) build --release --workspace

demo: deps
	$(CARGO) run --release -p kv-client --bin kv-tui -- --demo

test: deps
	$(CARGO) test --workspace

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: deps
	$(CARGO) run --release -p kv-client --bin kv -- bench
	$(CARGO) build --release -p kv-server -p kv-bench
	$(CARGO) run --release -p kv-bench -- relay
