# KV: one entry point for running, testing and benchmarking.
#
#   make demo   - build and start kv-tui --demo (embedded server, a bot speaking, you joined)
#   make test   - install what the build needs, then run every test of the workspace
#   make bench  - the benchmarks of BENCHMARKS.md (playout quality: about 12 minutes; echo
#                 cancellation and gain control: under a minute; end-to-end encryption:
#                 about 3 minutes)
#   make venv   - the Python the playout meter needs (PESQ-WB), in target/pyenv
#   make install - release binaries, the systemd unit, an example config, shell completions
#                 and man pages, under PREFIX (default /usr/local), staged in DESTDIR
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
# systemd provides systemd-analyze, which checks the unit (tests/tests/dist_files.rs).
# libspeexdsp-dev: SpeexDSP, which the echo benchmark (kv-tests' echo-bench) measures the
# client's echo canceller against.
DEB_PACKAGES := pkg-config cmake libasound2-dev libopus-dev tmux pulseaudio pulseaudio-utils \
  libasound2-plugins python3-venv python3-dev gcc espeak-ng sox opus-tools systemd \
  libspeexdsp-dev

# The meter's Python. System Pythons are often externally managed (PEP 668), so it gets its
# own venv; tests and the bench find it through KV_PYTHON.
PYENV := target/pyenv
PYTHON := $(PYENV)/bin/python
PY_PACKAGES := numpy scipy pesq==0.0.4
export KV_PYTHON ?= $(abspath $(PYTHON))

.PHONY: deps venv build demo test lint bench install

# Where `make install` puts things. DESTDIR stages the whole tree (packaging); the unit's
# ExecStart names $(BINDIR)/kv-server. The configuration stays in /etc/kv-server (where
# the unit and the server look), and an existing config.toml there is never overwritten.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
# Cargo's output directory (CARGO_TARGET_DIR if set) and the profile to install.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
PROFILE ?= release
PROFILE_DIR := $(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
BINARIES := kv-server kv kv-tui

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
	$(CARGO) run --release -p kv-tests --bin echo-bench
	$(CARGO) run --release -p kv-tests --bin e2ee-bench

# Generated files (completions, man pages) come from the binaries' own flag definitions
# (`kv-dist`, dist/src/main.rs), so they cannot drift from the real flags.
install: deps
	$(CARGO) build --profile $(PROFILE) -p kv-server -p kv-client -p kv-dist
	rm -rf $(TARGET_DIR)/dist && $(TARGET_DIR)/$(PROFILE_DIR)/kv-dist $(TARGET_DIR)/dist >/dev/null
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man1 \
	  $(DESTDIR)$(DATADIR)/doc/kv-server $(DESTDIR)$(SYSCONFDIR)/kv-server \
	  $(DESTDIR)$(DATADIR)/bash-completion/completions $(DESTDIR)$(DATADIR)/zsh/site-functions \
	  $(DESTDIR)$(DATADIR)/fish/vendor_completions.d
	for b in $(BINARIES); do \
	  install -m 755 $(TARGET_DIR)/$(PROFILE_DIR)/$$b $(DESTDIR)$(BINDIR)/$$b; \
	  install -m 644 $(TARGET_DIR)/dist/completions/bash/$$b.bash \
	    $(DESTDIR)$(DATADIR)/bash-completion/completions/$$b; \
	  install -m 644 $(TARGET_DIR)/dist/completions/zsh/_$$b $(DESTDIR)$(DATADIR)/zsh/site-functions/_$$b; \
	  install -m 644 $(TARGET_DIR)/dist/completions/fish/$$b.fish \
	    $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/$$b.fish; \
	done
	install -m 644 $(TARGET_DIR)/dist/man/man1/*.1 $(DESTDIR)$(MANDIR)/man1/
	sed 's|/usr/local/bin/kv-server|$(BINDIR)/kv-server|' dist/kv-server.service \
	  > $(TARGET_DIR)/dist/kv-server.service
	install -m 644 $(TARGET_DIR)/dist/kv-server.service $(DESTDIR)$(UNITDIR)/kv-server.service
	install -m 644 dist/config.toml $(DESTDIR)$(DATADIR)/doc/kv-server/config.example.toml
	[ -e $(DESTDIR)$(SYSCONFDIR)/kv-server/config.toml ] || \
	  install -m 644 dist/config.toml $(DESTDIR)$(SYSCONFDIR)/kv-server/config.toml
