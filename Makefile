# relay's developer entry points. `make run` and `make test` install what they need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test unit bench autobahn clean

# Start relay on the example config, in the foreground (Ctrl-C stops it).
run: $(STAMP)
	$(BIN)/relay serve --config aphlict.example.json

# Everything CI runs: lint, type checks, then the whole test suite.
test: $(STAMP)
	bash scripts/ensure-services
	$(BIN)/ruff check relay tests bench autobahn
	$(BIN)/ruff format --check relay tests bench autobahn
	$(BIN)/mypy
	$(BIN)/python -m pytest

# Quick loop while developing: the pure core only.
unit: $(STAMP)
	$(BIN)/python -m pytest --no-cov tests/test_config.py tests/test_layers.py tests/core \
		--ignore=tests/core/test_coalescer.py

# The benchmark (bench/README.md): every scenario, 3-4 minutes; results in bench/results/.
bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

# Optional: Autobahn|Testsuite against the client listener (needs Python 2.7
# and a C compiler; see autobahn/README.md).
autobahn: $(STAMP)
	scripts/autobahn

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .coverage .pytest_cache .mypy_cache .ruff_cache *.egg-info
