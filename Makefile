# relay's developer entry points. `make run` and `make test` install what they need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv installs exactly what uv.lock names (hash-checked); it is itself pinned,
# with hashes, in scripts/uv-requirements.txt and kept out of the project's venv.
UV_HOME := .uv
UV := $(UV_HOME)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
# Bytecode written at install, as pip does for a production install: uv does not
# by default, and with PYTHONDONTWRITEBYTECODE set (as here) no run ever writes
# it, so every relay process compiled every module it imports at each start
# (--workers 6: 7 processes, ~8 MiB more memory and 0.6 s more each, issue 20).
export UV_COMPILE_BYTECODE := 1
# relay itself is installed editable (its sources, not a copy): its bytecode is
# written beside them by this, before each run; only changed files are compiled.
COMPILE_RELAY = $(BIN)/python -m compileall -q relay
# The newest release of every dependency, lock ignored: `make test-latest`.
LATEST := .venv-latest

.PHONY: run test checks unit bench fuzz autobahn lock test-latest clean

# Start relay on the example config, in the foreground (Ctrl-C stops it).
run: $(STAMP)
	$(COMPILE_RELAY)
	$(BIN)/relay serve --config aphlict.example.json

# Everything CI runs: lint, type checks, then the whole test suite.
test: $(STAMP)
	$(MAKE) --no-print-directory checks BIN=$(BIN)

# What `test` and `test-latest` run, with the tools of the venv named by BIN.
checks:
	bash scripts/ensure-services
	$(COMPILE_RELAY)
	$(BIN)/ruff check relay tests bench autobahn
	$(BIN)/ruff format --check relay tests bench autobahn
	$(BIN)/mypy
	$(BIN)/python -m pytest

# Quick loop while developing: the pure core only.
unit: $(STAMP)
	$(BIN)/python -m pytest --no-cov tests/config/test_config.py tests/test_layers.py \
		tests/core tests/links --ignore=tests/core/test_coalescer.py

# The benchmark (bench/README.md): every scenario, 3-4 minutes; results in bench/results/.
bench: $(VENV)/.bench-installed
	$(COMPILE_RELAY)
	$(BIN)/python -m bench

# A long fuzz run (tests/fuzz): seeded hostile input against a real node over raw
# sockets. FUZZ_SEED=N replays a run's stream of inputs, FUZZ_SECONDS its length;
# FUZZ_REPORT=path.md keeps the summary. Failing inputs are saved in fuzz-failures/.
FUZZ_SECONDS ?= 150
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz --seconds $(FUZZ_SECONDS) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED)) \
		$(if $(FUZZ_REPORT),--report $(FUZZ_REPORT))

$(VENV)/.bench-installed: $(STAMP)
	$(UV) sync --quiet --locked --python $(PYTHON) --extra test --extra bench
	touch $@

# Optional: Autobahn|Testsuite against the client listener (needs Python 2.7
# and a C compiler; see autobahn/README.md).
autobahn: $(STAMP)
	scripts/autobahn

# --locked: a pyproject.toml whose ranges the lock no longer satisfies stops
# here, with uv naming the difference, instead of installing something else.
$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --quiet --locked --python $(PYTHON) --extra test
	rm -f $(VENV)/.bench-installed
	touch $@

$(UV): scripts/uv-requirements.txt
	$(PYTHON) -m pip install --quiet --no-deps --require-hashes --upgrade \
		--target $(UV_HOME) -r scripts/uv-requirements.txt
	touch $@

# Refresh the lock on purpose: every dependency to its newest release within
# pyproject.toml's ranges. Review `git diff uv.lock`, run `make test`, commit.
lock: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

# The suite against today's newest releases, lock ignored, in a venv of its
# own: shows an upstream break before a lock refresh brings it to main.
test-latest: $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(LATEST)
	$(UV) pip install --quiet --upgrade --python $(LATEST)/bin/python -e '.[test]'
	$(MAKE) --no-print-directory checks BIN=$(LATEST)/bin

clean:
	rm -rf $(VENV) $(LATEST) $(UV_HOME) .coverage .pytest_cache .mypy_cache .ruff_cache *.egg-info
